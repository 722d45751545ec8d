// Fuzzes reading a JSON file (config/json_file.h): the bytes of the input are the file.
// Properties: nothing throws; exactly one of a value and an error comes back; the same
// bytes read from a file give the same result as from memory; an accepted value writes
// back to text that reads back to the same value.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "config/json_file.h"
#include "tests/fuzz/fuzz_check.h"

using ipex_shim::JsonFile;

namespace {

// One in-memory file for the whole run, rewritten per input and read through its /proc path.
const std::string& file_path() {
  static const std::string path = [] {
    const int fd = memfd_create("json_file_fuzz", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "memfd_create failed");
    return "/proc/self/fd/" + std::to_string(fd);
  }();
  return path;
}

int file_descriptor() { return std::stoi(file_path().substr(std::string("/proc/self/fd/").size())); }

// Depth of nesting of a parsed value, counting the outermost list or object as 1.
int depth(const nlohmann::json& value) {
  int deepest = 0;
  if (value.is_structured()) {
    for (const auto& item : value) deepest = std::max(deepest, depth(item));
    return deepest + 1;
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const JsonFile parsed = ipex_shim::parse_json_text(text);
  FUZZ_CHECK(parsed.ok == parsed.error.empty(), "ok and error disagree: '" + parsed.error + "'");

  const int fd = file_descriptor();
  FUZZ_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == static_cast<ssize_t>(size),
             "cannot write the in-memory file");
  const JsonFile read = ipex_shim::read_json_file(file_path());
  FUZZ_CHECK(read.ok == parsed.ok && read.error == parsed.error,
             "the file and the text give different results: '" + read.error + "' / '" +
                 parsed.error + "'");
  if (!parsed.ok) return 0;
  FUZZ_CHECK(read.value == parsed.value, "the file and the text give different values");
  FUZZ_CHECK(depth(parsed.value) <= ipex_shim::kMaxConfigDepth,
             "accepted a value nested deeper than the bound");

  // Written back (as the shim writes configs) and read again: the same value.
  const std::string again = parsed.value.dump(4, ' ', false, nlohmann::json::error_handler_t::strict);
  const JsonFile reread = ipex_shim::parse_json_text(again);
  FUZZ_CHECK(reread.ok, "its own output does not read back: " + reread.error);
  FUZZ_CHECK(reread.value == parsed.value, "the value changed through a write and a read");
  return 0;
}
