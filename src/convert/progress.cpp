#include "convert/progress.h"

#include <cstdio>

namespace mx8::convert {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

Progress::Progress(bool enabled, uint64_t total, std::string label)
    : enabled_(enabled), total_(total), label_(std::move(label)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  // An error unwinding past us: end the bar's line so the error message starts on its own.
  if (enabled_ && !finished_) std::fputc('\n', stderr);
}

void Progress::add(uint64_t bytes) {
  done_ += bytes;
  if (!enabled_) return;
  std::unique_lock lock(draw_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  std::lock_guard lock(draw_mutex_);
  draw(true);
  std::fputc('\n', stderr);
  finished_ = true;
}

void Progress::draw(bool final) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const uint64_t done = final ? total_ : done_.load();
  const double frac = total_ ? static_cast<double>(done) / total_ : 1.0;
  const double rate = secs > 0 ? done / secs : 0;
  const int width = 30, filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  char eta[32] = "--";
  if (rate > 0 && !final) {
    const int s = static_cast<int>((total_ - done) / rate);
    std::snprintf(eta, sizeof eta, "%d:%02d", s / 60, s % 60);
  }
  std::fprintf(stderr, "\r%s [%s] %5.1f%% %s/%s  %s/s  ETA %s   ", label_.c_str(), bar.c_str(), 100 * frac,
               human_bytes(done).c_str(), human_bytes(total_).c_str(), human_bytes(rate).c_str(),
               final ? "0:00" : eta);
  std::fflush(stderr);
}

}  // namespace mx8::convert
