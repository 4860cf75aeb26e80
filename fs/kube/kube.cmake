# fs/kube: pcifs-kube, the Kubernetes DRA driver (a node agent). It talks to
# the pcifs host daemon only through the control socket (fs/control's client),
# to the kubelet over gRPC on unix sockets (fs/kube/proto: our own .proto files
# with the kubelet's package, service, message and field names and numbers),
# and to the API server over HTTPS (libcurl).
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
pkg_check_modules(PROTOBUF REQUIRED IMPORTED_TARGET protobuf)
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
find_program(PROTOC protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# Generated code: one library, warnings of ours not applied to it.
file(GLOB _kube_protos CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/fs/kube/proto/*.proto)
set(_kube_gen_dir ${CMAKE_BINARY_DIR}/kube_gen)
file(MAKE_DIRECTORY ${_kube_gen_dir})
set(_kube_gen_srcs)
foreach(p ${_kube_protos})
  get_filename_component(n ${p} NAME_WE)
  set(outs ${_kube_gen_dir}/${n}.pb.cc ${_kube_gen_dir}/${n}.pb.h
           ${_kube_gen_dir}/${n}.grpc.pb.cc ${_kube_gen_dir}/${n}.grpc.pb.h)
  add_custom_command(
    OUTPUT ${outs}
    COMMAND ${PROTOC} --proto_path=${CMAKE_SOURCE_DIR}/fs/kube/proto
            --cpp_out=${_kube_gen_dir} --grpc_out=${_kube_gen_dir}
            --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN} ${p}
    DEPENDS ${p}
    COMMENT "protoc ${n}.proto")
  list(APPEND _kube_gen_srcs ${_kube_gen_dir}/${n}.pb.cc ${_kube_gen_dir}/${n}.grpc.pb.cc)
endforeach()
if(_kube_gen_srcs)
  add_library(pcifs_kube_proto STATIC ${_kube_gen_srcs})
  target_include_directories(pcifs_kube_proto SYSTEM PUBLIC ${_kube_gen_dir})
  target_link_libraries(pcifs_kube_proto PUBLIC PkgConfig::GRPCPP PkgConfig::PROTOBUF)
  # Generated code is not ours to fix: no -Werror, no extra warnings.
  target_compile_options(pcifs_kube_proto PRIVATE -w)
endif()

pcifs_layer(pcifs_kube fs/kube)
get_target_property(_kt pcifs_kube TYPE)
if(_kt STREQUAL "STATIC_LIBRARY")
  target_link_libraries(pcifs_kube PUBLIC pcifs_control nlohmann_json::nlohmann_json
                        spdlog::spdlog PkgConfig::CURL)
  if(TARGET pcifs_kube_proto)
    target_link_libraries(pcifs_kube PUBLIC pcifs_kube_proto)
  endif()
  # The tests' fake API server (tests/fixtures/fake_apiserver.hpp): cpp-httplib's
  # SSLServer (Debian ships it compiled, with OpenSSL); certificates by the openssl tool.
  pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
  pcifs_unit_tests(kube pcifs_kube pcifs_control PkgConfig::HTTPLIB)
  if(EXISTS ${CMAKE_SOURCE_DIR}/fs/kube/main.cpp)
    add_executable(pcifs-kube ${CMAKE_SOURCE_DIR}/fs/kube/main.cpp)
    target_link_libraries(pcifs-kube PRIVATE pcifs_kube CLI11::CLI11)
    target_compile_definitions(pcifs-kube PRIVATE PCIFS_VERSION="${PROJECT_VERSION}")
    install(TARGETS pcifs-kube RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endif()
