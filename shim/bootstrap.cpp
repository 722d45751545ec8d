// The preloaded library. It has no libtorch dependency (DESIGN.md fact 1: a library linking
// libtorch costs ~670 ms and ~165 MB in every process it is preloaded into, including
// `sh` and `git`). Its whole job:
//   1. At load, parse the environment table once. Mode off: stay inert.
//   2. Wait until libtorch is resident *and initialised*, then load libipex_shim_core.so by
//      absolute path from this library's own directory (never by a search that the
//      working directory or an environment variable could redirect) and call its entry.
//   3. Interpose pthread_create so every thread started afterwards gets the shim's
//      dispatch key enabled (it lives in thread-local state; new threads start without it).
//
// When is libtorch initialised? A library is mapped (dl_iterate_phdr lists it) before its
// constructors have run, and libraries loaded beside it run constructors that call dlopen
// themselves (libGLdispatch does, while torch/_C loads): starting the core from such a
// nested call crashes. So the core starts only at two moments where every constructor has
// finished:
//   - in __libc_start_main, for a C++ program linked to libtorch: the dynamic loader has
//     initialised every needed library before it calls into the program;
//   - when the outermost dlopen of an absolute path returns, for Python's `import torch`
//     (torch/_C*.so is loaded by absolute path and brings libtorch with it).
//
// The dlopen pitfall: glibc decides where a relative name is searched from the caller's
// return address (the caller's RUNPATH). A wrapper that calls the real dlopen becomes "the
// caller". So calls with a relative name are passed on untouched as a tail call (the
// compiler emits a jump, and glibc still sees the original return address); only absolute
// paths, where the caller does not matter for the search, are called and inspected.
//
// No exception leaves this file: the constructor and the interposed functions catch
// everything at their boundary and fall back to plain pass-through.
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "shim/core_interface.h"
#include "shim/log.h"
#include "shim/settings.h"

namespace {

using DlopenFn = void* (*)(const char*, int);
using ThreadStartFn = void* (*)(void*);
using PthreadCreateFn = int (*)(pthread_t*, const pthread_attr_t*, ThreadStartFn, void*);
using ThreadHookFn = void (*)();
using MainFn = int (*)(int, char**, char**);
using LibcStartMainFn = int (*)(MainFn, int, char**, void (*)(), void (*)(), void (*)(), void*);

enum CoreState : int { kNotStarted, kStarting, kRunning, kFailed };

std::atomic<DlopenFn> g_real_dlopen{nullptr};
std::atomic<PthreadCreateFn> g_real_pthread_create{nullptr};
std::atomic<bool> g_waiting_for_torch{false};
std::atomic<int> g_core_state{kNotStarted};
std::atomic<ThreadHookFn> g_on_thread_start{nullptr};

// How many absolute-path dlopen calls this thread is inside (constructors may nest them).
__thread int t_dlopen_depth = 0;

// Written once by the constructor before g_waiting_for_torch is set, read-only afterwards.
// A pointer, not objects with constructors: the constructor below may run before this
// file's static initialisers.
struct BootState {
  ipex_shim::Settings settings;
  std::string core_path;                // empty in mode off
  std::vector<std::string> problems;    // said once torch arrives (see bootstrap())
};
BootState* g_state = nullptr;

DlopenFn real_dlopen() {
  DlopenFn fn = g_real_dlopen.load(std::memory_order_acquire);
  if (fn == nullptr) {
    fn = reinterpret_cast<DlopenFn>(dlsym(RTLD_NEXT, "dlopen"));
    g_real_dlopen.store(fn, std::memory_order_release);
  }
  return fn;
}

PthreadCreateFn real_pthread_create() {
  PthreadCreateFn fn = g_real_pthread_create.load(std::memory_order_acquire);
  if (fn == nullptr) {
    fn = reinterpret_cast<PthreadCreateFn>(dlsym(RTLD_NEXT, "pthread_create"));
    g_real_pthread_create.store(fn, std::memory_order_release);
  }
  return fn;
}

int find_libtorch(struct dl_phdr_info* info, size_t, void* found) {
  const char* path = info->dlpi_name;
  if (path == nullptr) return 0;
  const char* slash = std::strrchr(path, '/');
  const char* base = slash ? slash + 1 : path;
  if (std::strncmp(base, "libtorch_cpu.so", 15) == 0) {
    *static_cast<bool*>(found) = true;
    return 1;
  }
  return 0;
}

bool libtorch_resident() {
  bool found = false;
  dl_iterate_phdr(find_libtorch, &found);
  return found;
}

void start_core() {
  int expected = kNotStarted;
  if (!g_core_state.compare_exchange_strong(expected, kStarting)) return;
  g_waiting_for_torch.store(false, std::memory_order_relaxed);
  try {
    for (const std::string& problem : g_state->problems)
      ipex_shim::log_line(ipex_shim::Severity::warning, problem);
    if (g_state->settings.mode == ipex_shim::Mode::off) {
      g_core_state.store(kFailed);  // nothing to start: the warnings were all there was to do
      return;
    }
    void* handle = real_dlopen()(g_state->core_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      ipex_shim::log_line(ipex_shim::Severity::error,
                          std::string("cannot load ") + g_state->core_path + ": " +
                              (why ? why : "unknown reason") + "; running stock PyTorch");
      g_core_state.store(kFailed);
      return;
    }
    auto start = reinterpret_cast<IpexShimCoreStartFn>(dlsym(handle, IPEX_SHIM_CORE_START_SYMBOL));
    if (start == nullptr) {
      ipex_shim::log_line(ipex_shim::Severity::error,
                          g_state->core_path + " has no entry point " IPEX_SHIM_CORE_START_SYMBOL
                                        "; running stock PyTorch");
      g_core_state.store(kFailed);
      return;
    }
    IpexShimCoreSettings settings = ipex_shim::to_core_settings(g_state->settings);
    IpexShimCoreHooks hooks{nullptr};
    if (start(&settings, &hooks) != 0) {
      g_core_state.store(kFailed);  // the core has said why
      return;
    }
    g_on_thread_start.store(hooks.on_thread_start, std::memory_order_release);
    g_core_state.store(kRunning);
  } catch (...) {
    g_core_state.store(kFailed);
  }
}

void check_for_torch() {
  if (g_waiting_for_torch.load(std::memory_order_relaxed) && libtorch_resident()) start_core();
}

// This library's own directory, resolved while the working directory is still the one
// LD_PRELOAD was written against.
std::string own_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&own_directory), &info) == 0 || info.dli_fname == nullptr)
    return {};
  char resolved[PATH_MAX];
  if (realpath(info.dli_fname, resolved) == nullptr) return {};
  std::string path(resolved);
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

const char* read_environment(const char* name) { return std::getenv(name); }

void bootstrap() {
  static std::atomic<bool> done{false};
  if (done.exchange(true)) return;
  try {
    std::vector<std::string> problems;
    ipex_shim::Settings settings = ipex_shim::parse_settings(
        &read_environment, ipex_shim::cpus_in_affinity_mask(), &problems);
    // Problems with the settings are said in processes that load torch, once each: a shell
    // or a build tool that merely inherits the environment stays quiet.
    if (settings.mode == ipex_shim::Mode::off && problems.empty()) return;

    std::string core_path;
    if (settings.mode != ipex_shim::Mode::off) {
      std::string directory = own_directory();
      if (directory.empty()) {
        ipex_shim::log_line(ipex_shim::Severity::error,
                            "cannot find the directory of libipex_shim.so; running stock PyTorch");
        return;
      }
      core_path = directory + "/" IPEX_SHIM_CORE_FILE_NAME;
    }
    g_state = new BootState{settings, core_path, problems};
    real_dlopen();
    real_pthread_create();
    g_waiting_for_torch.store(true, std::memory_order_release);
    // Not check_for_torch() here: libtorch may be mapped but not yet initialised.
  } catch (...) {
    // Out of memory while parsing a few environment variables: stay inert.
  }
}

struct ThreadStart {
  ThreadStartFn start;
  void* arg;
  ThreadHookFn hook;
};

void* run_thread(void* raw) {
  ThreadStart start = *static_cast<ThreadStart*>(raw);
  std::free(raw);
  start.hook();
  return start.start(start.arg);
}

__attribute__((constructor)) void on_load() { bootstrap(); }

}  // namespace

extern "C" __attribute__((visibility("default"))) void* dlopen(const char* file, int mode) {
  DlopenFn real = real_dlopen();
  if (file == nullptr || std::strchr(file, '/') == nullptr) {
    return real(file, mode);  // tail call: glibc must see the original caller
  }
  ++t_dlopen_depth;
  void* handle = real(file, mode);
  --t_dlopen_depth;
  if (handle != nullptr && t_dlopen_depth == 0) check_for_torch();
  return handle;
}

extern "C" __attribute__((visibility("default"))) int __libc_start_main(
    MainFn main, int argc, char** argv, void (*init)(), void (*fini)(), void (*rtld_fini)(),
    void* stack_end) {
  static LibcStartMainFn real =
      reinterpret_cast<LibcStartMainFn>(dlsym(RTLD_NEXT, "__libc_start_main"));
  check_for_torch();  // every needed library's constructors have run by now
  return real(main, argc, argv, init, fini, rtld_fini, stack_end);
}

extern "C" __attribute__((visibility("default"))) int pthread_create(pthread_t* thread,
                                                                     const pthread_attr_t* attr,
                                                                     ThreadStartFn start,
                                                                     void* arg) {
  PthreadCreateFn real = real_pthread_create();
  ThreadHookFn hook = g_on_thread_start.load(std::memory_order_acquire);
  if (hook == nullptr) return real(thread, attr, start, arg);
  auto* wrapped = static_cast<ThreadStart*>(std::malloc(sizeof(ThreadStart)));
  if (wrapped == nullptr) return real(thread, attr, start, arg);
  *wrapped = ThreadStart{start, arg, hook};
  int rc = real(thread, attr, &run_thread, wrapped);
  if (rc != 0) std::free(wrapped);
  return rc;
}
