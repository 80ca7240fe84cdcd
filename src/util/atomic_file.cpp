#include "mx8/util/atomic_file.h"

#include <unistd.h>
#include <cerrno>
#include <cstring>

#include "mx8/error.h"

namespace mx8 {

namespace {
std::string errno_text() {
  return std::strerror(errno);
}
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  temp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  file_ = std::fopen(temp_path_.c_str(), "wb");
  if (!file_) throw Error("cannot create " + temp_path_ + ": " + errno_text());
}

AtomicFile::~AtomicFile() {
  if (file_) {
    std::fclose(file_);
    std::remove(temp_path_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t size) {
  if (!file_) throw Error("write to " + path_ + " after commit");
  if (size && std::fwrite(data, 1, size, file_) != size)
    throw Error("cannot write " + temp_path_ + ": " + errno_text());
  written_ += size;
}

void AtomicFile::commit() {
  if (!file_) throw Error("commit of " + path_ + " twice");
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  int saved_errno = errno;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok) {
    std::remove(temp_path_.c_str());
    errno = saved_errno;
    throw Error("cannot write " + temp_path_ + ": " + errno_text());
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    saved_errno = errno;
    std::remove(temp_path_.c_str());
    errno = saved_errno;
    throw Error("cannot rename " + temp_path_ + " to " + path_ + ": " + errno_text());
  }
}

void write_file_atomically(const std::string& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

}  // namespace mx8
