// See float_text.h.
#include "mx8/util/float_text.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace mx8 {

std::string shortest_float_text(float v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
  char buf[32];
  for (int precision = 1; precision <= 9; ++precision) {  // 9 significant digits always read back
    std::snprintf(buf, sizeof buf, "%.*g", precision, double(v));
    if (std::strtof(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace mx8
