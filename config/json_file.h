// Reading a JSON file that the user, or anyone who could write to it, controls: the parser
// must survive any bytes. Size and nesting depth are bounded before parsing, and parse
// errors come back as text, never as an exception.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace ipex_shim {

struct JsonFile {
  bool ok = false;
  nlohmann::json value;
  std::string error;  // "cannot open: No such file or directory", "parse error at byte 17: ..."
};

constexpr size_t kMaxConfigBytes = 64u << 20;
constexpr int kMaxConfigDepth = 32;

// Reads only a regular file no larger than kMaxConfigBytes (checked with fstat before the first
// byte is read); a directory, FIFO or device is refused without waiting or reading
// ("not a regular file (a FIFO)"). A symbolic link is followed: reading through one is harmless.
JsonFile read_json_file(const std::string& path);

// The same checks on text already in memory (tests, and the file reader itself).
JsonFile parse_json_text(const std::string& text);

}  // namespace ipex_shim
