#include "mx8/backend/cpu/huge_alloc.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "mx8/error.h"

namespace mx8::cpu {

void* huge_page_alloc(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  const size_t size = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  void* p = nullptr;
  if (posix_memalign(&p, align, size) != 0 || !p)
    throw Error("cpu: out of memory allocating " + std::to_string(bytes) + " bytes");
#if defined(MADV_HUGEPAGE)
  if (align == kHuge) madvise(p, size, MADV_HUGEPAGE);
#endif
  return p;
}

}  // namespace mx8::cpu
