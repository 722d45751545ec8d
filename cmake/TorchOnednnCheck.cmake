# Refuses, at configure time, a torch that would put a second oneDNN into the process.
#
# The shim runs its kernels on the oneDNN that find_package(dnnl) finds, and relies on torch
# using that same library: one copy of oneDNN per process, one set of dnnl_* symbols. Debian's
# torch links the system libdnnl dynamically (libtorch_cpu.so has a DT_NEEDED entry on
# libdnnl.so.2 on Debian 12, libdnnl.so.3.6 on Debian 13), so that holds. pip's torch wheels
# link oneDNN statically into libtorch_cpu.so, with its dnnl_* symbols exported or hidden
# depending on the release. A shim built against such a torch (Torch_DIR pointing at
# torch.utils.cmake_prefix_path) would load a second oneDNN beside it: two builds of the
# library, possibly of different versions, and where torch exports its copy's symbols the
# dynamic linker may bind the shim's dnnl_* calls to torch's copy (or torch's to the shim's),
# whose ABI is another version's. Nothing in this project tests that, so it is refused.
#
# What the check reads from each torch library, with readelf:
#   - its DT_NEEDED entries: a libdnnl.so* / libmkldnn.so* entry means oneDNN is a dynamic
#     dependency, and its name must be the soname of the shim's oneDNN;
#   - its dynamic symbol table: a *defined* dnnl_primitive_create or dnnl_version (or the
#     MKL-DNN 0.x mkldnn_ names) means it carries oneDNN and exports it;
#   - only when it has no oneDNN DT_NEEDED entry (so Debian's torch does not pay the few
#     seconds this takes): oneDNN's own version banner, "oneDNN v%d.%d.%d" (DNNL 1.x:
#     "DNNL v", MKL-DNN 0.x: "MKL-DNN v"), which oneDNN's verbose mode prints and torch's own
#     code does not contain. It finds a copy whose symbols are hidden.
# A library with oneDNN inside (exported symbols or the banner) is refused; so is one that
# links a libdnnl whose name differs from the shim's oneDNN's soname. A torch built without
# oneDNN at all passes: the shim's copy is then the only one.
#
# IPEX_SHIM_ALLOW_BUNDLED_ONEDNN=ON turns the refusal of a torch with oneDNN inside into a
# warning that says the combination is untested. It exists because the signs read here are
# heuristics: a torch whose copy is renamed or private may be harmless, and a misreading
# should not leave anyone without a build. A torch linking another libdnnl gets no such
# option: pointing find_package(dnnl) at the oneDNN that torch links fixes that properly.
#
# Usable in a project (ipex_shim_torch_library_files, then ipex_shim_check_torch_onednn) and
# in cmake -P scripts (ipex_shim_check_torch_onednn alone), which is how its test runs it.

set(_IPEX_SHIM_ONEDNN_SYMBOLS "(dnnl|mkldnn)_(primitive_create|version)")
set(_IPEX_SHIM_ONEDNN_NEEDED "^lib(dnnl|mkldnn)\\.so")
set(_IPEX_SHIM_ONEDNN_BANNER "(oneDNN|DNNL|MKL-DNN) v%d")

# The torch libraries find_package(Torch) resolved to: the imported targets torch and
# torch_cpu, TORCH_LIBRARY, and the libtorch_cpu.so beside it (for a TorchConfig without a
# torch_cpu target); real paths, each once.
function(ipex_shim_torch_library_files out_var)
  set(candidates "")
  foreach(target torch torch_cpu)
    if(TARGET ${target})
      get_target_property(imported ${target} IMPORTED)
      get_target_property(type ${target} TYPE)
      if(imported AND type STREQUAL "SHARED_LIBRARY")
        get_target_property(location ${target} LOCATION)
        list(APPEND candidates "${location}")
      endif()
    endif()
  endforeach()
  if(TORCH_LIBRARY)
    get_filename_component(torch_library_dir "${TORCH_LIBRARY}" DIRECTORY)
    list(APPEND candidates "${TORCH_LIBRARY}" "${torch_library_dir}/libtorch_cpu.so")
  endif()
  set(files "")
  foreach(candidate IN LISTS candidates)
    if(EXISTS "${candidate}")
      get_filename_component(real "${candidate}" REALPATH)
      list(APPEND files "${real}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES files)
  set(${out_var} "${files}" PARENT_SCOPE)
endfunction()

function(_ipex_shim_find_readelf out_var)
  if(IPEX_SHIM_READELF)
    set(readelf "${IPEX_SHIM_READELF}")
  elseif(CMAKE_READELF)
    set(readelf "${CMAKE_READELF}")
  else()
    find_program(IPEX_SHIM_READELF NAMES readelf llvm-readelf)
    set(readelf "${IPEX_SHIM_READELF}")
  endif()
  if(NOT readelf)
    message(FATAL_ERROR "ipex_shim: cannot check which oneDNN torch uses: no readelf was "
      "found. Install binutils, or set IPEX_SHIM_READELF to a readelf program.")
  endif()
  set(${out_var} "${readelf}" PARENT_SCOPE)
endfunction()

function(_ipex_shim_readelf readelf library option out_var)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C "${readelf}" -W ${option} "${library}"
    OUTPUT_VARIABLE output ERROR_VARIABLE errors RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    string(STRIP "${errors}" errors)
    message(FATAL_ERROR "ipex_shim: cannot check which oneDNN torch uses: "
      "'${readelf} ${option} ${library}' failed (${result}): ${errors}")
  endif()
  set(${out_var} "${output}" PARENT_SCOPE)
endfunction()

# A library's dynamic section: <prefix>_NEEDED (its DT_NEEDED entries that name a oneDNN) and
# <prefix>_SONAME.
function(_ipex_shim_read_dynamic_section readelf library prefix)
  _ipex_shim_readelf("${readelf}" "${library}" --dynamic dynamic)
  string(REGEX MATCHALL "\\(NEEDED\\)[^[\n]*\\[[^]\n]+\\]" needed_lines "${dynamic}")
  set(needed "")
  foreach(line IN LISTS needed_lines)
    string(REGEX REPLACE ".*\\[([^]]+)\\]$" "\\1" name "${line}")
    if(name MATCHES "${_IPEX_SHIM_ONEDNN_NEEDED}")
      list(APPEND needed "${name}")
    endif()
  endforeach()
  set(soname "")
  if(dynamic MATCHES "\\(SONAME\\)[^[\n]*\\[([^]\n]+)\\]")
    set(soname "${CMAKE_MATCH_1}")
  endif()
  set(${prefix}_NEEDED "${needed}" PARENT_SCOPE)
  set(${prefix}_SONAME "${soname}" PARENT_SCOPE)
endfunction()

# What a torch library says about oneDNN: <prefix>_NEEDED and <prefix>_SONAME as above,
# <prefix>_SYMBOLS (the oneDNN entry points it defines and exports) and <prefix>_BANNER
# (oneDNN's version banner, looked for only without a oneDNN DT_NEEDED entry).
function(_ipex_shim_inspect_library readelf library prefix)
  _ipex_shim_read_dynamic_section("${readelf}" "${library}" ${prefix})

  # readelf --dyn-syms: "Num: Value Size Type Bind Vis Ndx Name"; a defined symbol has a
  # section number in Ndx, an imported one UND.
  _ipex_shim_readelf("${readelf}" "${library}" --dyn-syms symbols)
  string(REGEX MATCHALL " [0-9]+ ${_IPEX_SHIM_ONEDNN_SYMBOLS}[@\n]" defined "${symbols}")
  set(defined_names "")
  foreach(match IN LISTS defined)
    string(REGEX MATCH "${_IPEX_SHIM_ONEDNN_SYMBOLS}" name "${match}")
    list(APPEND defined_names "${name}")
  endforeach()
  list(REMOVE_DUPLICATES defined_names)

  set(banner "")
  if(NOT ${prefix}_NEEDED)
    file(STRINGS "${library}" banners LENGTH_MINIMUM 10 REGEX "${_IPEX_SHIM_ONEDNN_BANNER}")
    if(banners)
      list(GET banners 0 banner)
    endif()
  endif()

  set(${prefix}_NEEDED "${${prefix}_NEEDED}" PARENT_SCOPE)
  set(${prefix}_SONAME "${${prefix}_SONAME}" PARENT_SCOPE)
  set(${prefix}_SYMBOLS "${defined_names}" PARENT_SCOPE)
  set(${prefix}_BANNER "${banner}" PARENT_SCOPE)
endfunction()

# ipex_shim_check_torch_onednn(TORCH_LIBRARIES <file>... ONEDNN_LIBRARY <file>
#                              [ALLOW_BUNDLED <bool>])
# Stops the configure with a message that says what was found, why it is refused and what is
# supported; with ALLOW_BUNDLED true, warns instead. Says in a status line what it accepted.
function(ipex_shim_check_torch_onednn)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "ONEDNN_LIBRARY;ALLOW_BUNDLED" "TORCH_LIBRARIES")
  if(NOT arg_TORCH_LIBRARIES)
    message(FATAL_ERROR "ipex_shim: cannot check which oneDNN torch uses: find_package(Torch) "
      "gave no torch library file (looked at the torch and torch_cpu targets and TORCH_LIBRARY).")
  endif()
  if(NOT arg_ONEDNN_LIBRARY OR NOT EXISTS "${arg_ONEDNN_LIBRARY}")
    message(FATAL_ERROR "ipex_shim: cannot check which oneDNN torch uses: the shim's oneDNN "
      "library '${arg_ONEDNN_LIBRARY}' does not exist.")
  endif()
  _ipex_shim_find_readelf(readelf)
  _ipex_shim_read_dynamic_section("${readelf}" "${arg_ONEDNN_LIBRARY}" shim)
  if(NOT shim_SONAME)
    get_filename_component(shim_SONAME "${arg_ONEDNN_LIBRARY}" NAME)
  endif()

  string(CONCAT supported
    "Supported: a torch that links oneDNN dynamically, the same libdnnl this build finds "
    "(find_package(dnnl)), as Debian's packages do: Debian 12 (python3-torch and libtorch-dev "
    "1.13 with libdnnl 2.6) and Debian 13 (python3-torch and libtorch-dev 2.6 with libdnnl "
    "3.7). README.md has the tested matrix. Configure in a fresh build folder without "
    "Torch_DIR, or with Torch_DIR set to Debian's <libdir>/cmake/Torch.")

  set(bundled "")
  set(other_onednn "")
  set(accepted "")
  foreach(library IN LISTS arg_TORCH_LIBRARIES)
    _ipex_shim_inspect_library("${readelf}" "${library}" torch)
    set(evidence "")
    if(torch_SYMBOLS)
      list(JOIN torch_SYMBOLS " and " names)
      string(APPEND evidence "it defines and exports ${names}")
    endif()
    if(torch_BANNER)
      if(evidence)
        string(APPEND evidence ", and ")
      endif()
      string(APPEND evidence "it contains oneDNN's version banner \"${torch_BANNER}\"")
    endif()
    if(evidence)
      if(torch_NEEDED)
        list(JOIN torch_NEEDED ", " needed)
        set(linkage "It links ${needed} dynamically as well.")
      else()
        set(linkage "It has no DT_NEEDED entry on a libdnnl.so*: pip's torch wheels are built so.")
      endif()
      string(CONCAT problem
        "${library} carries its own copy of oneDNN: ${evidence}. ${linkage} "
        "The shim runs its kernels on ${arg_ONEDNN_LIBRARY}, so the process would hold two "
        "copies of oneDNN: torch's primitives and the shim's would come from different builds, "
        "possibly of different versions, and where torch exports its copy's dnnl_* symbols "
        "the dynamic linker may bind the shim's oneDNN calls to torch's copy or torch's to "
        "the shim's (symbol interposition), across two ABIs.")
      string(APPEND bundled "${problem}\n")
    elseif(torch_NEEDED)
      set(mismatched "")
      foreach(name IN LISTS torch_NEEDED)
        if(NOT name STREQUAL shim_SONAME)
          list(APPEND mismatched "${name}")
        endif()
      endforeach()
      if(mismatched)
        list(JOIN mismatched ", " names)
        string(CONCAT problem
          "${library} links ${names} dynamically, but the shim's oneDNN, "
          "${arg_ONEDNN_LIBRARY}, is ${shim_SONAME}: the process would load two different "
          "oneDNN libraries that define the same dnnl_* symbols, and the dynamic linker may "
          "bind the shim's calls to torch's copy or torch's to the shim's (symbol "
          "interposition), across two ABIs. find_package(dnnl) must find the oneDNN torch "
          "was built with.")
        string(APPEND other_onednn "${problem}\n")
      else()
        list(JOIN torch_NEEDED ", " needed)
        list(APPEND accepted "${library} links ${needed} dynamically")
      endif()
    endif()
  endforeach()

  if(other_onednn)
    message(FATAL_ERROR "ipex_shim: refusing this torch. ${other_onednn}${supported}")
  endif()
  if(bundled)
    if(arg_ALLOW_BUNDLED)
      message(WARNING "ipex_shim: ${bundled}"
        "Building anyway because IPEX_SHIM_ALLOW_BUNDLED_ONEDNN is ON. This combination is "
        "untested: results, stability and speed are unknown.\n${supported}")
      return()
    endif()
    message(FATAL_ERROR "ipex_shim: refusing this torch. ${bundled}${supported}\n"
      "To build anyway, untested: -DIPEX_SHIM_ALLOW_BUNDLED_ONEDNN=ON.")
  endif()
  if(accepted)
    list(JOIN accepted "; " accepted)
    message(STATUS "ipex_shim: one oneDNN in the process: ${accepted}, the soname of the shim's "
      "oneDNN (${arg_ONEDNN_LIBRARY})")
  else()
    message(STATUS "ipex_shim: torch carries no oneDNN; the shim's (${arg_ONEDNN_LIBRARY}) is "
      "the only one")
  endif()
endfunction()
