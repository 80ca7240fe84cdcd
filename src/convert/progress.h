// A one-line progress bar on stderr: done/total bytes, bytes/s and ETA, redrawn at most 10 times a
// second from whichever thread reports progress. Silent unless enabled (the CLI enables it only
// when stderr is a terminal, so logs and pipes stay clean).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace mx8::convert {

class Progress {
 public:
  Progress(bool enabled, uint64_t total_bytes, std::string label);
  ~Progress();
  void add(uint64_t bytes);  // thread-safe
  void finish();             // final redraw and newline

 private:
  void draw(bool final);
  bool enabled_;
  uint64_t total_;
  std::string label_;
  std::atomic<uint64_t> done_{0};
  std::mutex draw_mutex_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool finished_ = false;
};

std::string human_bytes(double bytes);

}  // namespace mx8::convert
