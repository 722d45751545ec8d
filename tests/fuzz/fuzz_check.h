// What every fuzz target checks besides the sanitizers: a property that must hold for any
// input. A failed check prints what broke and aborts, so libFuzzer saves the input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define FUZZ_CHECK(condition, what)                                                  \
  do {                                                                               \
    if (!(condition)) {                                                              \
      std::fprintf(stderr, "fuzz check failed at %s:%d: %s\n  (%s)\n", __FILE__,     \
                   __LINE__, std::string(what).c_str(), #condition);                 \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

namespace ipex_shim::fuzz {

// A message to the user is one line (shim/log.h): no newline, carriage return or
// other control character below 0x20 (ESC among them) that could split it or drive the
// terminal.
inline bool one_line(const std::string& text) {
  for (unsigned char c : text) {
    if (c < 0x20) return false;
  }
  return !text.empty();
}

inline void check_messages(const std::vector<std::string>& problems) {
  for (const std::string& problem : problems) {
    FUZZ_CHECK(one_line(problem), "a problem is not one printable line: " + problem);
  }
}

}  // namespace ipex_shim::fuzz
