// Quantizes a GGUF with llama.cpp's own quantizer (llama_model_quantize, default parameters but the
// file type), as llama.cpp's llama-quantize tool does. Built against a released llama.cpp by
// scripts/make_llama_cpp_fixtures.sh; llama.cpp is a reference to check against, not part of mx8.
#include <cstdio>
#include <cstdlib>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: llama_cpp_quantize IN.gguf OUT.gguf FTYPE  (llama.h's LLAMA_FTYPE_*)\n");
    return 2;
  }
  llama_backend_init();
  llama_model_quantize_params p = llama_model_quantize_default_params();
  p.ftype = llama_ftype(std::atoi(argv[3]));
  p.nthread = 1;
  const uint32_t rc = llama_model_quantize(argv[1], argv[2], &p);
  llama_backend_free();
  return rc == 0 ? 0 : 1;
}
