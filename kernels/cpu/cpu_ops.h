#pragma once

#include <cstdint>

#include "kernels/backend.h"

// Single-threaded CPU reference kernels. The CPU backend runs them in parallel over disjoint
// pieces of work (heads, tasks, rows); each function here touches only the piece it is given.
namespace ringserve::kernels::cpu {

// Chunked linear attention of one head: rows of q/k/v for head `h`, state [D, D] of that head.
void LinearAttentionHead(const LinearAttentionParams& p, int64_t h);

// One decode step of one (sequence, head).
void LinearDecodeHead(const LinearDecodeParams& p, int64_t b, int64_t h);

// Copies the new K/V rows of kv head `g` into the bf16 cache.
void StoreKv(const SoftmaxAttentionParams& p, int64_t g);

// Softmax attention of new query rows [q_begin, q_end) of all query heads that share kv head
// `g`, reading keys and values from the cache (flash-style blocks, online softmax).
void SoftmaxAttentionBlock(const SoftmaxAttentionParams& p, int64_t g, int64_t q_begin,
                           int64_t q_end);

// Softmax attention of the single new query row `t` of the query heads that share kv head `g`,
// by direct dot products over the bf16 cache: keys and values are widened to fp32 once per tile
// of 32 (which stays in L1), scores are register-blocked four keys at a time, and each output
// row accumulates in registers over a tile. For decode, where a handful of query rows makes GEMM
// packing cost more than the arithmetic. Agrees with SoftmaxAttentionBlock up to float rounding.
void SoftmaxAttentionQuery(const SoftmaxAttentionParams& p, int64_t g, int64_t t);

// Routing of tokens [begin, end).
void MoeRouteRows(const MoeRouteParams& p, int64_t begin, int64_t end);

// Samples one row.
int32_t SampleRow(const float* logits, int64_t vocab, const SamplingParams& params);

}  // namespace ringserve::kernels::cpu
