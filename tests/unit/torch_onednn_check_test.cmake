# Tests cmake/TorchOnednnCheck.cmake, the configure-time refusal of a torch that carries its
# own oneDNN. Run by CTest, one case per test:
#   cmake -DCASE=<case> -DMODULE=<TorchOnednnCheck.cmake> -DC_COMPILER=<cc> -DWORK_DIR=<dir>
#         [-DREAL_TORCH_LIBRARIES=<a:b> -DREAL_ONEDNN_LIBRARY=<file>]
#         [-DSOURCE_DIR=<project> -DGENERATOR=<generator>] -P torch_onednn_check_test.cmake
# Each case builds the fake libraries it needs from small C files (a libdnnl with the two
# entry points the check looks for; torch libraries that link it, or define them, or hide
# them), runs the check in a child cmake -P (a refusal ends that process), and states what the
# child must have said. The same file is that child when RUN_CHECK is set.

if(RUN_CHECK)
  include("${MODULE}")
  string(REPLACE ":" ";" torch_libraries "${TORCH_LIBRARIES}")
  ipex_shim_check_torch_onednn(TORCH_LIBRARIES ${torch_libraries}
    ONEDNN_LIBRARY "${ONEDNN_LIBRARY}" ALLOW_BUNDLED "${ALLOW_BUNDLED}")
  return()
endif()

foreach(required CASE MODULE C_COMPILER WORK_DIR)
  if(NOT ${required})
    message(FATAL_ERROR "torch_onednn_check_test: ${required} is not set")
  endif()
endforeach()

set(dir "${WORK_DIR}/${CASE}")
file(REMOVE_RECURSE "${dir}")
file(MAKE_DIRECTORY "${dir}")

function(fail)
  string(JOIN "" text ${ARGN})
  message(FATAL_ERROR "${CASE}: ${text}")
endfunction()

function(compile output)
  execute_process(COMMAND "${C_COMPILER}" -shared -fPIC -O2 ${ARGN} -o "${output}"
    WORKING_DIRECTORY "${dir}" RESULT_VARIABLE result ERROR_VARIABLE errors)
  if(NOT result EQUAL 0)
    fail("cannot build ${output}: ${errors}")
  endif()
endfunction()

# A stand-in for libdnnl with the given soname, in its own folder.
function(fake_libdnnl soname)
  file(WRITE "${dir}/fake_dnnl.c" [[
int dnnl_version(void) { return 3; }
int dnnl_primitive_create(void) { return 0; }
]])
  file(MAKE_DIRECTORY "${dir}/onednn")
  compile("onednn/${soname}" fake_dnnl.c "-Wl,-soname,${soname}")
endfunction()

# A libtorch_cpu.so that calls oneDNN through a DT_NEEDED entry on ${soname}, as Debian's does.
function(fake_torch_linking soname)
  file(WRITE "${dir}/torch_linking.c" [[
int dnnl_primitive_create(void);
int torch_convolution(void) { return dnnl_primitive_create(); }
]])
  compile(libtorch_cpu.so torch_linking.c -Wl,--no-as-needed "${dir}/onednn/${soname}")
endfunction()

# A libtorch_cpu.so with oneDNN inside, as pip's wheels are built: the entry points defined in
# the library itself, exported (extra arguments may hide them), and oneDNN's version banner.
function(fake_torch_bundling)
  file(WRITE "${dir}/torch_bundling.c" [[
static const char banner[] = "onednn_verbose,info,oneDNN v%d.%d.%d (commit %s)\n";
int dnnl_version(void) { return 3; }
int dnnl_primitive_create(void) { return 0; }
__attribute__((visibility("default"))) int torch_convolution(void) {
  return dnnl_primitive_create() + dnnl_version();
}
__attribute__((visibility("default"))) const char *torch_onednn_banner(void) { return banner; }
]])
  compile(libtorch_cpu.so torch_bundling.c ${ARGN})
endfunction()

# Runs the check; sets check_result and check_output (stdout and stderr, whitespace folded,
# since CMake rewraps message text) in the caller.
macro(run_check torch_libraries onednn_library allow_bundled)
  execute_process(COMMAND "${CMAKE_COMMAND}" -DRUN_CHECK=ON "-DMODULE=${MODULE}"
    "-DTORCH_LIBRARIES=${torch_libraries}" "-DONEDNN_LIBRARY=${onednn_library}"
    "-DALLOW_BUNDLED=${allow_bundled}" -P "${CMAKE_CURRENT_LIST_FILE}"
    RESULT_VARIABLE check_result OUTPUT_VARIABLE check_stdout ERROR_VARIABLE check_stderr)
  string(REGEX REPLACE "[ \n]+" " " check_output "${check_stdout} ${check_stderr}")
endmacro()

function(expect_said)
  foreach(text IN LISTS ARGN)
    string(FIND "${check_output}" "${text}" at)
    if(at EQUAL -1)
      fail("expected the check to say \"${text}\"; it said: ${check_output}")
    endif()
  endforeach()
endfunction()

function(expect_accepted)
  if(NOT check_result EQUAL 0)
    fail("expected the check to accept; it failed (${check_result}): ${check_output}")
  endif()
  expect_said(${ARGN})
endfunction()

function(expect_refused)
  if(check_result EQUAL 0)
    fail("expected the check to refuse; it accepted: ${check_output}")
  endif()
  expect_said("CMake Error" "ipex_shim: refusing this torch."
    "symbol interposition"
    "Supported: a torch that links oneDNN dynamically"
    "Debian 12 (python3-torch and libtorch-dev 1.13 with libdnnl 2.6)"
    "Debian 13 (python3-torch and libtorch-dev 2.6 with libdnnl 3.7). README.md has the tested matrix."
    ${ARGN})
endfunction()

set(torch "${dir}/libtorch_cpu.so")

if(CASE STREQUAL "AcceptsTorchLinkingOnednnDynamically")
  fake_libdnnl(libdnnl.so.3)
  fake_torch_linking(libdnnl.so.3)
  run_check("${torch}" "${dir}/onednn/libdnnl.so.3" OFF)
  expect_accepted("ipex_shim: one oneDNN in the process: ${torch} links libdnnl.so.3 dynamically")

elseif(CASE STREQUAL "RefusesTorchExportingItsOwnOnednn")
  fake_libdnnl(libdnnl.so.3)
  fake_torch_bundling()
  run_check("${torch}" "${dir}/onednn/libdnnl.so.3" OFF)
  expect_refused("${torch} carries its own copy of oneDNN"
    "it defines and exports dnnl_" "dnnl_primitive_create" "dnnl_version"
    "no DT_NEEDED entry on a libdnnl.so*"
    "two copies of oneDNN" "To build anyway, untested: -DIPEX_SHIM_ALLOW_BUNDLED_ONEDNN=ON.")

elseif(CASE STREQUAL "RefusesTorchHidingItsOwnOnednn")
  fake_libdnnl(libdnnl.so.3)
  fake_torch_bundling(-fvisibility=hidden -s)
  run_check("${torch}" "${dir}/onednn/libdnnl.so.3" OFF)
  expect_refused("${torch} carries its own copy of oneDNN"
    "oneDNN's version banner \"onednn_verbose,info,oneDNN v%d.%d.%d (commit %s)\""
    "two copies of oneDNN" "To build anyway, untested: -DIPEX_SHIM_ALLOW_BUNDLED_ONEDNN=ON.")
  string(FIND "${check_output}" "defines and exports" at)
  if(NOT at EQUAL -1)
    fail("the hidden entry points were reported as exported: ${check_output}")
  endif()

elseif(CASE STREQUAL "RefusesTorchLinkingAnotherOnednn")
  fake_libdnnl(libdnnl.so.2)
  fake_torch_linking(libdnnl.so.2)
  fake_libdnnl(libdnnl.so.3)
  run_check("${torch}" "${dir}/onednn/libdnnl.so.3" OFF)
  expect_refused("${torch} links libdnnl.so.2 dynamically, but the shim's oneDNN"
    "is libdnnl.so.3")
  # The escape hatch is for a torch with oneDNN inside; this one is fixed by finding the
  # right libdnnl, so the option changes nothing.
  run_check("${torch}" "${dir}/onednn/libdnnl.so.3" ON)
  expect_refused("${torch} links libdnnl.so.2 dynamically")
  string(FIND "${check_output}" "IPEX_SHIM_ALLOW_BUNDLED_ONEDNN" at)
  if(NOT at EQUAL -1)
    fail("the refusal of another libdnnl offered the escape hatch: ${check_output}")
  endif()

elseif(CASE STREQUAL "AllowOptionWarnsInsteadOfRefusing")
  fake_libdnnl(libdnnl.so.3)
  fake_torch_bundling()
  run_check("${torch}" "${dir}/onednn/libdnnl.so.3" ON)
  expect_accepted("CMake Warning" "${torch} carries its own copy of oneDNN"
    "Building anyway because IPEX_SHIM_ALLOW_BUNDLED_ONEDNN is ON. This combination is untested")

elseif(CASE STREQUAL "AcceptsThisMachinesTorch")
  if(NOT REAL_TORCH_LIBRARIES OR NOT REAL_ONEDNN_LIBRARY)
    fail("REAL_TORCH_LIBRARIES and REAL_ONEDNN_LIBRARY must be set")
  endif()
  run_check("${REAL_TORCH_LIBRARIES}" "${REAL_ONEDNN_LIBRARY}" OFF)
  # Debian's torch: libtorch_cpu links the system libdnnl, the one the shim uses.
  expect_accepted("libtorch_cpu.so" "links libdnnl.so" "the soname of the shim's oneDNN (${REAL_ONEDNN_LIBRARY})")

elseif(CASE STREQUAL "ProjectConfigureRefusesBundlingTorch")
  # The whole project configured with Torch_DIR at a pip-like torch: a TorchConfig.cmake with
  # the imported targets torch and torch_cpu, as a wheel's has, over fake libraries.
  if(NOT SOURCE_DIR OR NOT GENERATOR)
    fail("SOURCE_DIR and GENERATOR must be set")
  endif()
  fake_torch_bundling()
  file(WRITE "${dir}/torch_thin.c" "int torch_thin(void) { return 0; }\n")
  compile(libtorch.so torch_thin.c -Wl,--no-as-needed "${torch}")
  file(WRITE "${dir}/share/cmake/Torch/TorchConfig.cmake" "
add_library(torch_cpu SHARED IMPORTED)
set_target_properties(torch_cpu PROPERTIES IMPORTED_LOCATION \"${torch}\")
add_library(torch SHARED IMPORTED)
set_target_properties(torch PROPERTIES IMPORTED_LOCATION \"${dir}/libtorch.so\"
  INTERFACE_LINK_LIBRARIES torch_cpu)
set(TORCH_LIBRARY \"${dir}/libtorch.so\")
set(TORCH_LIBRARIES torch)
set(TORCH_INCLUDE_DIRS \"\")
set(Torch_FOUND TRUE)
")
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${dir}/build"
    -G "${GENERATOR}" "-DTorch_DIR=${dir}/share/cmake/Torch" -DIPEX_SHIM_BUILD_TESTS=OFF
    RESULT_VARIABLE check_result OUTPUT_VARIABLE check_stdout ERROR_VARIABLE check_stderr)
  string(REGEX REPLACE "[ \n]+" " " check_output "${check_stdout} ${check_stderr}")
  expect_refused("${torch} carries its own copy of oneDNN" "dnnl_primitive_create"
    "To build anyway, untested: -DIPEX_SHIM_ALLOW_BUNDLED_ONEDNN=ON.")
  if(EXISTS "${dir}/build/build.ninja" OR EXISTS "${dir}/build/Makefile")
    fail("the refused configure still wrote build files")
  endif()

else()
  fail("unknown case")
endif()
