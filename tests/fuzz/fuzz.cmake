# libFuzzer harnesses: every tests/fuzz/<name>_fuzz.cpp is one parser of
# outside input, with its seed corpus in tests/fuzz/corpus/<name>/.
#  - clang with -DPCIFS_FUZZ=ON: real libFuzzer binaries fuzz_<name>
#    (-fsanitize=fuzzer plus address,undefined; the libraries get coverage
#    instrumentation). tools/fuzz.sh builds and runs them.
#  - every other build (GCC, clang ASan+UBSan, TSan): the same harnesses linked
#    with tests/fuzz/replay_main.cpp, which runs each corpus file once.
# Either way ctest replays each corpus as test fuzz.<name> (label fuzz).
option(PCIFS_FUZZ "Build libFuzzer binaries (clang only)" OFF)
set(_fuzz_real OFF)
if(PCIFS_FUZZ)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    set(_fuzz_real ON)
  else()
    message(WARNING "PCIFS_FUZZ needs clang: building corpus replayers instead")
  endif()
endif()

set(_fuzz_libs pcifs_control pcifs_core pcifs_sim pcifs_sysfs)
if(_fuzz_real)
  # Coverage for the code under test, and the same sanitizers as the harnesses.
  foreach(lib ${_fuzz_libs} pcifs_fault)
    get_target_property(_type ${lib} TYPE)
    if(_type STREQUAL "STATIC_LIBRARY")
      target_compile_options(${lib} PRIVATE -fsanitize=fuzzer-no-link,address,undefined
                                            -fno-omit-frame-pointer)
    endif()
  endforeach()
endif()

add_custom_target(fuzzers)
file(GLOB _fuzz_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/*_fuzz.cpp)
foreach(src ${_fuzz_srcs})
  get_filename_component(n ${src} NAME_WE)
  string(REGEX REPLACE "_fuzz$" "" n ${n})
  set(corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${n})
  if(_fuzz_real)
    add_executable(fuzz_${n} ${src})
    target_compile_options(fuzz_${n} PRIVATE -fsanitize=fuzzer,address,undefined
                                             -fno-omit-frame-pointer)
    target_link_options(fuzz_${n} PRIVATE -fsanitize=fuzzer,address,undefined)
    # -runs=0: run the corpus once, fuzz nothing.
    add_test(NAME fuzz.${n} COMMAND fuzz_${n} -runs=0 ${corpus})
  else()
    add_executable(fuzz_${n} ${src} ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.cpp)
    add_test(NAME fuzz.${n} COMMAND fuzz_${n} ${corpus})
  endif()
  target_include_directories(fuzz_${n} PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(fuzz_${n} PRIVATE pcifs_core pcifs_sim pcifs_sysfs)
  if(n MATCHES "^control_")
    target_link_libraries(fuzz_${n} PRIVATE pcifs_control)
  endif()
  set_tests_properties(fuzz.${n} PROPERTIES LABELS "fuzz" TIMEOUT 120)
  add_dependencies(fuzzers fuzz_${n})
endforeach()
