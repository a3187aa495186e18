#pragma once

#include <cstdio>
#include <cstdlib>

// FUZZ_CHECK(condition, message): a property every input must satisfy. A violation prints the
// condition and aborts, which libFuzzer reports as a crash and saves the input.
#define FUZZ_CHECK(condition, message)                                                   \
  do {                                                                                   \
    if (!(condition)) {                                                                  \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", __FILE__, __LINE__,     \
                   #condition, message);                                                 \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
