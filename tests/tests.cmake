# Tool tests: every tests/tools/*_test.sh runs under CTest with the build and
# source directories in its environment. Exit 77 means skipped.
file(GLOB tool_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/tools/*_test.sh)
foreach(t ${tool_tests})
  get_filename_component(n ${t} NAME_WE)
  add_test(NAME tools.${n} COMMAND bash ${t})
  set_tests_properties(tools.${n} PROPERTIES LABELS "tools" SKIP_RETURN_CODE 77
    ENVIRONMENT "PCIFS_BUILD_DIR=${CMAKE_BINARY_DIR};PCIFS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()

# Layering (STYLE.md) is a build error to break: compile probe files with each
# layer's own include directories. The control proves the probes can pass.
function(pcifs_layer_probe name target file expect_fail)
  add_test(NAME layering.${name}
    COMMAND ${CMAKE_CXX_COMPILER} -std=c++20 -fsyntax-only
      "-I$<JOIN:$<TARGET_PROPERTY:${target},INCLUDE_DIRECTORIES>,;-I>"
      ${CMAKE_SOURCE_DIR}/tests/fixtures/layering/${file}
    COMMAND_EXPAND_LISTS)
  set_tests_properties(layering.${name} PROPERTIES LABELS "layering" WILL_FAIL ${expect_fail})
endfunction()
pcifs_layer_probe(core_cannot_include_sim pcifs_core core_includes_sim.cpp TRUE)
pcifs_layer_probe(sim_cannot_include_core pcifs_sim backend_includes_core.cpp TRUE)
pcifs_layer_probe(sysfs_cannot_include_core pcifs_sysfs backend_includes_core.cpp TRUE)
pcifs_layer_probe(core_sees_its_own_and_public pcifs_core core_sees_public.cpp FALSE)

# Mount tests: every tests/mount/*_test.cpp is a gtest binary `mount_<name>`
# that starts the real daemon ($PCIFS_BUILD_DIR/pcifs) on temp mountpoints.
# They may also link the core and the simulator, for differential checks.
file(GLOB mount_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/mount/*_test.cpp)
foreach(t ${mount_tests})
  get_filename_component(n ${t} NAME_WE)
  add_executable(mount_${n} ${t})
  target_include_directories(mount_${n} PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_compile_options(mount_${n} PRIVATE ${PCIFS_TEST_COMPILE_OPTIONS})
  target_link_libraries(mount_${n} PRIVATE pcifs_core pcifs_sim GTest::gtest GTest::gtest_main)
  add_dependencies(mount_${n} pcifs)
  if(n STREQUAL "restart_test")
    add_dependencies(mount_${n} pcifs-supervise)
  endif()
  # kube_*: pcifs-kube end to end (the agent binary, a fake kubelet over gRPC,
  # a fake API server over HTTPS).
  if(n MATCHES "^kube_" AND TARGET pcifs-kube)
    target_link_libraries(mount_${n} PRIVATE pcifs_kube PkgConfig::HTTPLIB)
    add_dependencies(mount_${n} pcifs-kube)
  endif()
  add_test(NAME mount.${n} COMMAND mount_${n} --gtest_brief=1)
  set_tests_properties(mount.${n} PROPERTIES LABELS "mount" TIMEOUT 600
    ENVIRONMENT "PCIFS_BUILD_DIR=${CMAKE_BINARY_DIR};PCIFS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()
# FUSE over io_uring (README "Transports"). mount.uring_test flips the kernel's
# enable_uring switch for its run; the suites below run again with every daemon
# on io_uring (PCIFS_TEST_TRANSPORT, mount_fixture.hpp), under with_uring.sh,
# which turns the switch on and back. Alone (RUN_SERIAL): a daemon of another
# test on --transport=auto would take io_uring while the switch is on.
set_tests_properties(mount.uring_test PROPERTIES RUN_SERIAL TRUE LABELS "mount;uring")
# pcifs-bench --transport=both flips the switch for its run too.
set_tests_properties(tools.bench_smoke_test PROPERTIES RUN_SERIAL TRUE)
# many_core_test sets enable_uring too (through the bench and its profiles).
set_tests_properties(tools.many_core_test PROPERTIES RUN_SERIAL TRUE)
# Not no_park_test: over io_uring a burst of callers waiting on one stuck
# device can hold another device's request in the kernel (README "Transports").
foreach(n bar_io_test claims_test config_test doe_test power_test reset_remove_test
          revocation_test rom_test shadow_test tree_test views_multi_test views_policy_test)
  # Over io_uring the kernel (6.18) drops a signal that reaches a caller
  # before its request reached the daemon (README "Transports"): not that test.
  set(filter "")
  if(n STREQUAL "doe_test")
    set(filter "--gtest_filter=-DoeTest.InterruptedReaderGetsEintrBeforeTheTimeoutAndTheExchangeGoesOn")
  endif()
  add_test(NAME mount_uring.${n}
           COMMAND ${CMAKE_SOURCE_DIR}/tests/tools/with_uring.sh $<TARGET_FILE:mount_${n}> --gtest_brief=1 ${filter})
  set_tests_properties(mount_uring.${n} PROPERTIES LABELS "mount;uring" TIMEOUT 600 RUN_SERIAL TRUE
    SKIP_RETURN_CODE 77
    ENVIRONMENT "PCIFS_BUILD_DIR=${CMAKE_BINARY_DIR};PCIFS_SOURCE_DIR=${CMAKE_SOURCE_DIR};PCIFS_TEST_TRANSPORT=uring")
endforeach()
pcifs_layer_probe(core_cannot_include_fuse pcifs_core core_includes_fuse.cpp TRUE)
# The control room sits beside the core: it cannot reach the FUSE adapter.
pcifs_layer_probe(control_cannot_include_fuse pcifs_control core_includes_fuse.cpp TRUE)
# pcifs-kube reaches the daemon only through the control socket: no FUSE layer.
if(TARGET pcifs_kube)
  pcifs_layer_probe(kube_cannot_include_fuse pcifs_kube core_includes_fuse.cpp TRUE)
endif()

# Fuzz harnesses and the replay of their seed corpora (tests/fuzz/fuzz.cmake).
include(${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz.cmake)
