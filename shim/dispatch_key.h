// The dispatch key the shim's kernels live at, and switching it on per thread.
//
// DESIGN.md fact 2: on torch 1.13 CPU, AutocastXPU is a mode key above Autograd that stock
// torch leaves empty. Kernels there run before autograd and before a user's own
// torch.autocast (which still applies when the shim redispatches), and registering there
// prints no "overriding a previously registered kernel" warnings. The key is in the default
// excluded set, so a thread enables it by both including it and un-excluding it.
#pragma once

#include <c10/core/DispatchKey.h>
#include <c10/core/DispatchKeySet.h>

#include <string>

namespace ipex_shim {

constexpr c10::DispatchKey kShimKey = c10::DispatchKey::AutocastXPU;

// The fusion observer's key (shim/fusion.h), enabled only while a fused prediction is open.
constexpr c10::DispatchKey kObserverKey = c10::DispatchKey::TESTING_ONLY_GenericMode;

// Both: what the shim's own work and its calls of stock ops run without.
constexpr c10::DispatchKeySet kShimKeys = c10::DispatchKeySet(kShimKey) | c10::DispatchKeySet(kObserverKey);

// Turns the shim on for the calling thread. Called for the thread that loads torch and,
// through the bootstrap's pthread_create hook, at the start of every later thread.
void enable_in_this_thread();

// Whether ops called from this thread reach the shim's kernels now.
bool active_in_this_thread();

// Empty when this torch leaves the key free; otherwise why the shim must not use it (newer
// torch releases put stock kernels at AutocastXPU).
std::string key_conflict();

}  // namespace ipex_shim
