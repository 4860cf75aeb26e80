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
