// Decode attention on thread-block clusters (attention_cluster.cu): its layout for a call, and its
// launch, for the dispatch in attention_decode.cu.
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/act_quantize.cuh"
#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/attention_decode.cuh"
#include "backend/cuda/backend_cuda.cuh"

namespace mx8::backend::cuda_impl {

// How attention_cluster_kernel spreads a (token, kv head): a cluster of n_hs * S blocks.
struct CluParams {
  int group;   // query heads per kv head
  int n_hs;    // head splits (group / Gb)
  int S;       // position splits
  bool early;  // one-token fused path: the first K/V round is loaded before griddepcontrol.wait
};

// A call's layout: cp.S == 0 where the kernel does not apply; gb query heads per block.
struct CluPlan {
  CluParams cp{0, 0, 0, false};
  int gb = 0;
};

// attention_cluster_kernel's layout for `a` (S == 0: it does not apply): head_dim 128, 16-byte
// aligned rows and q, group / Gb <= 8. S from the block table's capacity (the lengths are on the
// device, and a recorded step is replayed for every length up to the capacity): one split up to 160
// positions, above that one per `pos` positions of capacity, at most max_c blocks per cluster, no
// more blocks than ~2 per SM in all.
CluPlan cluster_plan(const CudaKvCache& c, const AttentionArgs& a);

// Launches attention_cluster_kernel with plan `pl` (nk set: the one-token rope + kv_write prologue; qo.codes
// set: the output also written quantized, head h of token t as tile h of row t).
void launch_cluster_attention(KvFormat f, const CluPlan& pl, const uint8_t* kp, const uint8_t* vp,
                              const KvGeom& g, const AttnParams& p, int n_kv, int n_tokens, uint32_t* err,
                              const NewKv& nk, const ActQuantOut& qo, cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
