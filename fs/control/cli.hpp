// `pcifs view add|rm|ls|watch`: the command line that talks to a host
// daemon's control socket [S16] through Client. fs/main.cpp registers it
// with add_view_cli() before parsing and, after parsing, lets run_view_cli()
// run it when `view` was given.
//
// --control PATH (default /run/pcifs/control.sock) is accepted in both
// places: `pcifs view --control P ls` and `pcifs view ls --control P`; both
// set ViewCli::control (when given twice, the last one wins).
//
// Exit statuses: 0 success; 1 the daemon answered an error ("pcifs: view add:
// <error>" on stderr); 2 usage (a bad command line, an unreadable or non-JSON
// FILE, a request over kMaxLine); 3 the daemon cannot be reached (no socket,
// EACCES on the socket, the connection broke, a malformed answer). A daemon
// that refuses the peer's uid (SO_PEERCRED) answers in words: status 1.
// `watch` runs until SIGINT; when the daemon closes it, status 3.
//
// ViewCli is plain state owned by the caller; it and the CLI::App must
// outlive run_view_cli(). Not thread-safe (a command line is single-threaded).
#pragma once

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <optional>
#include <string>

#include "control/protocol.hpp"

namespace pcifs::control {

inline constexpr int kExitDaemonError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

struct ViewCli {
  std::string control{kDefaultControlPath};
  std::string file;   // add FILE|-
  std::string name;   // rm NAME
  bool json = false;  // ls --json, locks --json
  // The subcommands, set by add_view_cli.
  CLI::App* view = nullptr;
  CLI::App* add = nullptr;
  CLI::App* rm = nullptr;
  CLI::App* ls = nullptr;
  CLI::App* watch = nullptr;
  CLI::App* locks = nullptr;
};

void add_view_cli(CLI::App& app, ViewCli& state);

// The exit status when `view` was selected on the command line, else nullopt.
std::optional<int> run_view_cli(const CLI::App& app, const ViewCli& state);
// The same with explicit streams (stdin for "add -"), for tests.
std::optional<int> run_view_cli(const CLI::App& app, const ViewCli& state, std::istream& in,
                                std::ostream& out, std::ostream& err);

}  // namespace pcifs::control
