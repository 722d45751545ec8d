// The dispatch keys the shim's kernels live at, chosen from what the running torch leaves
// free, and switching the shim on per thread.
//
// DESIGN.md fact 2: the mode key is an autocast key of a device this process does not use. It
// sits above Autograd, so the shim's kernels run before autograd and before a user's own
// torch.autocast (which still applies when the shim redispatches), and registering there
// prints no "overriding a previously registered kernel" warnings. On torch 1.13 AutocastXPU
// is empty on CPU; torch 2.x registers stock autocast kernels there, and leaves other
// devices' autocast keys empty (shim/torch_compat.h lists the candidates per release). The
// keys are in the default excluded set, so a thread enables the chosen one by both including
// it and un-excluding it.
#pragma once

#include <c10/core/DispatchKey.h>
#include <c10/core/DispatchKeySet.h>

#include <string>

namespace ipex_shim {

namespace detail {
extern c10::DispatchKey g_shim_key;
extern c10::DispatchKey g_observer_key;
}  // namespace detail

// The mode key: every op of a thread where the shim is on passes it.
inline c10::DispatchKey shim_key() { return detail::g_shim_key; }

// The fusion observer's key (shim/fusion.h), enabled only while a fused prediction is open.
inline c10::DispatchKey observer_key() { return detail::g_observer_key; }

// Both: what the shim's own work and its calls of stock ops run without.
inline c10::DispatchKeySet shim_keys() {
  return c10::DispatchKeySet(shim_key()) | c10::DispatchKeySet(observer_key());
}

// At start, before anything is registered: picks the first candidate mode key that this
// torch leaves free (no fallback there, no kernel there for the ops the shim overrides).
// Returns empty, or why no candidate is free (the shim then stays off).
std::string choose_keys();

// Turns the shim on for the calling thread. Called for the thread that loads torch and,
// through the bootstrap's pthread_create hook, at the start of every later thread.
void enable_in_this_thread();

// Whether ops called from this thread reach the shim's kernels now.
bool active_in_this_thread();

}  // namespace ipex_shim
