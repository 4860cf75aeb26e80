# Tool tests: every tests/tools/*_test.sh runs under CTest with the build and
# source directories in its environment. Exit 77 means skipped.
file(GLOB tool_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/tools/*_test.sh)
foreach(t ${tool_tests})
  get_filename_component(n ${t} NAME_WE)
  add_test(NAME tools.${n} COMMAND bash ${t})
  set_tests_properties(tools.${n} PROPERTIES LABELS "tools" SKIP_RETURN_CODE 77
    ENVIRONMENT "PCIFS_BUILD_DIR=${CMAKE_BINARY_DIR};PCIFS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()
