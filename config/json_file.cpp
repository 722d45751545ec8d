#include "config/json_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ipex_shim {
namespace {

// Deepest nesting of [ and { outside strings; stops counting past `limit`.
int nesting_depth(const std::string& text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    else if (c == ']' || c == '}') --depth;
    if (deepest > limit) break;
  }
  return deepest;
}

}  // namespace

JsonFile parse_json_text(const std::string& text) {
  JsonFile result;
  if (text.size() > kMaxConfigBytes) {
    result.error = "larger than " + std::to_string(kMaxConfigBytes >> 20) + " MiB";
    return result;
  }
  if (nesting_depth(text, kMaxConfigDepth) > kMaxConfigDepth) {
    result.error = "nested deeper than " + std::to_string(kMaxConfigDepth) + " levels";
    return result;
  }
  try {
    result.value = nlohmann::json::parse(text);
    result.ok = true;
  } catch (const nlohmann::json::exception& error) {
    result.error = error.what();
  }
  return result;
}

JsonFile read_json_file(const std::string& path) {
  JsonFile result;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    result.error = std::string("cannot open: ") + std::strerror(errno);
    return result;
  }
  std::string text;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes) break;
  }
  if (in.bad()) {
    result.error = std::string("cannot read: ") + std::strerror(errno);
    return result;
  }
  return parse_json_text(text);
}

}  // namespace ipex_shim
