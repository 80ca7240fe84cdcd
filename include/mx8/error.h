// The one exception type mx8 throws for bad input, bad files and failed system calls. Its message
// names the problem and, where there is one, the file or argument; the CLI prints it and exits 1.
#pragma once

#include <stdexcept>
#include <string>

namespace mx8 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace mx8
