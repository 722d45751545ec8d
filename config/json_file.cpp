#include "config/json_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

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

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a file";
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
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    result.error = std::string("cannot open: ") + std::strerror(errno);
    return result;
  }
  // Only a regular file is read, and only when its size is within the bound: a directory,
  // a FIFO or a device (/dev/zero never ends) is refused before a byte is read, and so is a
  // file larger than the bound (sparse or not, it is not read).
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    result.error = std::string("cannot read: ") + std::strerror(errno);
    ::close(fd);
    return result;
  }
  if (!S_ISREG(status.st_mode)) {
    result.error = std::string("not a regular file (") + file_kind(status.st_mode) + ")";
    ::close(fd);
    return result;
  }
  if (static_cast<uint64_t>(status.st_size) > kMaxConfigBytes) {
    result.error = "larger than " + std::to_string(kMaxConfigBytes >> 20) + " MiB (" +
                   std::to_string(static_cast<uint64_t>(status.st_size)) + " bytes); not read";
    ::close(fd);
    return result;
  }
  // The file may grow while it is read: never more than the bound and one byte.
  std::string text;
  char buffer[1 << 16];
  while (text.size() <= kMaxConfigBytes) {
    const ssize_t got = ::read(fd, buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      result.error = std::string("cannot read: ") + std::strerror(errno);
      ::close(fd);
      return result;
    }
    if (got == 0) break;
    text.append(buffer, static_cast<size_t>(got));
  }
  ::close(fd);
  return parse_json_text(text);
}

}  // namespace ipex_shim
