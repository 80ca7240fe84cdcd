// A float as the shortest decimal text that reads back as the same float ("0.1", not the 0.1f
// double's "0.10000000149011612"): embeddings written as JSON numbers are 40% shorter so, and exact.
#pragma once

#include <string>

namespace mx8 {

std::string shortest_float_text(float v);

}  // namespace mx8
