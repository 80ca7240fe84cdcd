// Stop sequences on generated text. Text is pushed as it is decoded; what is safe to show comes
// back at once, and text that might be the start of a stop sequence is held until it is known not
// to be. When a stop sequence completes, everything before it is returned and stopped() is true;
// the stop sequence itself is never shown.
#pragma once

#include <string>
#include <vector>

namespace mx8::runtime {

class StopText {
 public:
  explicit StopText(std::vector<std::string> stops);
  // Appends `piece`; returns the text that can be shown now.
  std::string push(const std::string& piece);
  // The held-back text (at the end of generation when no stop sequence completed).
  std::string flush();
  bool stopped() const { return stopped_; }
  // The stop sequence that completed: the first to complete as the text arrived byte by byte (of
  // those completing at the same byte, the longest), whatever the pieces it was pushed in.
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace mx8::runtime
