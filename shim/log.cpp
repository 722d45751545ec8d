#include "shim/log.h"

#include <unistd.h>

#include <map>
#include <mutex>

namespace ipex_shim {

void log_line(Severity severity, const std::string& text) {
  std::string line = "ipex_shim: ";
  if (severity == Severity::warning) line += "warning: ";
  if (severity == Severity::error) line += "error: ";
  line += text;
  line += '\n';
  // One write keeps lines from different threads and processes whole.
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t written = ::write(STDERR_FILENO, data, left);
    if (written <= 0) return;
    data += written;
    left -= static_cast<size_t>(written);
  }
}

void log_limited(const std::string& key, int limit, Severity severity, const std::string& text) {
  static std::mutex mutex;
  static std::map<std::string, int>* counts = new std::map<std::string, int>();  // never freed:
  // messages can come from static destructors at exit.
  int seen;
  {
    std::lock_guard<std::mutex> lock(mutex);
    seen = ++(*counts)[key];
  }
  if (seen > limit) return;
  if (seen == limit) {
    log_line(severity, text + " (further messages like this are suppressed)");
  } else {
    log_line(severity, text);
  }
}

}  // namespace ipex_shim
