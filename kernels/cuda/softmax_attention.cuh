#pragma once

// Causal GQA softmax attention over bf16 KV caches ([Hkv, capacity, D]). The new K/V rows are
// stored first (bf16, rounded like the CPU), then one of two kernels runs, both reading each KV
// head once for all the query heads of its group:
// - decode (tokens x group <= 32 query rows per sequence): split-KV over a batch of sequences.
//   Each block (key split, KV head, sequence) scores one key range of its sequence with fp32 FMAs
//   and online softmax; a combine kernel merges the ranges. The sequences' caches and lengths are
//   read on the device and each block derives its key range from its sequence's length, so the
//   launch depends only on the batch and head shapes and a captured CUDA graph of it serves any
//   batch of that size. It runs the batched decode op (one token per sequence) and the
//   single-sequence op when it has few query rows (one sequence, passed by value);
// - prefill tiles: 64 query rows x 64-key tiles on bf16 tensor cores (WMMA, fp32 accumulate),
//   online softmax in fp32. With split_bf16 the fp32 operands (Q and the probabilities) are
//   split into hi + lo bf16 halves (two MMAs each), accurate to ~2^-16; K/V are exact in bf16.
// Reference: cpu::StoreKv and cpu::SoftmaxAttentionBlock (CpuBackend::SoftmaxAttention and
// CpuBackend::SoftmaxAttentionDecode).

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace ringserve::kernels::cuda {

// One sequence's attention (Backend::SoftmaxAttention).
struct SoftmaxAttentionCudaParams {
  SoftmaxAttentionParams attn;  // device pointers
  bool split_bf16 = false;
  // Set by PlanSoftmaxAttention.
  bool decode = false;
  int64_t splits = 1;          // decode: key splits
  float* workspace = nullptr;  // decode: [Hkv, splits, tokens x group, D + 2] fp32
};

// Chooses the kernel and the key split for a GPU with `sm_count` SMs; returns workspace bytes.
size_t PlanSoftmaxAttention(SoftmaxAttentionCudaParams* p, int sm_count);
bool CanImplement(const SoftmaxAttentionCudaParams& p);
// Sets the kernels' shared-memory limits; call once per device before Launch.
cudaError_t InitSoftmaxAttentionKernels();
cudaError_t Launch(const SoftmaxAttentionCudaParams& p, cudaStream_t stream);

// One decode step of a batch of sequences (Backend::SoftmaxAttentionDecode). CanImplement checks
// the shapes; the host cannot read the sequences, so the caller guarantees for each b that
// step.seqs[b].past < step.seqs[b].capacity and that both caches are 16-byte aligned.
struct SoftmaxDecodeCudaParams {
  SoftmaxDecodeParams step;  // device pointers, step.seqs included
  // Set by PlanSoftmaxDecode from the shapes alone (not from the sequences' lengths).
  int64_t splits = 1;
  float* workspace = nullptr;  // [B, Hkv, splits, group, D + 2] fp32
};

// Chooses the key split (about two blocks per SM over B x Hkv, at most 64) for a GPU with
// `sm_count` SMs; returns workspace bytes.
size_t PlanSoftmaxDecode(SoftmaxDecodeCudaParams* p, int sm_count);
bool CanImplement(const SoftmaxDecodeCudaParams& p);
cudaError_t Launch(const SoftmaxDecodeCudaParams& p, cudaStream_t stream);

}  // namespace ringserve::kernels::cuda
