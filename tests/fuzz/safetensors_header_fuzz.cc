// Fuzzes the safetensors header parser (base::ParseSafetensors) with whole files: the 8-byte
// header length, the JSON header and the data section. Every accepted tensor must lie inside
// the input and hold exactly the bytes its shape and dtype need.
#include <cstddef>
#include <cstdint>

#include "common/base/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace {
volatile uint8_t sink;  // keeps the reads of every tensor byte
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ringserve::base::DTypeSize;
  auto tensors = ringserve::base::ParseSafetensors(data, size, "fuzz.safetensors");
  if (!tensors.ok()) return 0;
  uint8_t sum = 0;
  for (const auto& [name, view] : *tensors) {
    FUZZ_CHECK(name == view.name, "tensor keyed by another name");
    FUZZ_CHECK(view.bytes == 0 || (view.data >= data + 8 && view.data <= data + size &&
                                   view.bytes <= static_cast<size_t>(data + size - view.data)),
               "tensor bytes outside the input");
    FUZZ_CHECK(static_cast<uint64_t>(view.NumElements()) * DTypeSize(view.dtype) == view.bytes,
               "tensor size disagrees with its shape and dtype");
    for (size_t i = 0; i < view.bytes; ++i) sum += view.data[i];  // ASan checks every byte
  }
  sink = sum;
  return 0;
}
