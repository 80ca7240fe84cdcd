// Writing a file so that readers see either the old file or the complete new one, never a
// half-written one: write to "<path>.tmp.<pid>" in the same folder, fsync, then rename over <path>.
// If the writer is destroyed before commit() (an exception, Ctrl-C unwinding), the temporary is removed.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace mx8 {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  size_t bytes_written() const { return written_; }
  // Flushes, fsyncs and renames into place. Throws mx8::Error on any failure.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  size_t written_ = 0;
};

// Whole-file convenience: write `contents` to `path` atomically.
void write_file_atomically(const std::string& path, std::string_view contents);

}  // namespace mx8
