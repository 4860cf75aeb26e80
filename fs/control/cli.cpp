#include "control/cli.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <iostream>
#include <iterator>
#include <system_error>
#include <vector>

#include "control/client.hpp"

namespace pcifs::control {

namespace {

using nlohmann::json;

struct Io {
  std::istream& in;
  std::ostream& out;
  std::ostream& err;
};

int complain(Io& io, const std::string& verb, const std::string& text, int status) {
  io.err << "pcifs: view " << verb << ": " << text << "\n";
  io.err.flush();
  return status;
}

std::string errno_text(int e) { return std::error_code(e, std::system_category()).message(); }

std::string dump(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

std::string text_of(const json& obj, const char* key) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : dump(*it);
}

// Connects and exchanges one request: 0 with *response {"ok":true...}, or the
// exit status after printing why not.
int exchange(const ViewCli& s, Io& io, const std::string& verb, const json& req,
             std::unique_ptr<Client>* client, json* response) {
  std::string error;
  *client = Client::connect(s.control, &error);
  if (!*client) return complain(io, verb, error, kExitUnreachable);
  auto r = (*client)->request(req, &error);
  if (!r) return complain(io, verb, error, kExitUnreachable);
  if (r->value("ok", false) != true) {
    const std::string why = text_of(*r, "error");
    return complain(io, verb, why.empty() ? "the daemon refused: " + dump(*r) : why,
                    kExitDaemonError);
  }
  *response = std::move(*r);
  return 0;
}

bool read_file(const std::string& path, std::string* text, std::string* error) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (!f) {
    *error = "cannot read " + path + ": " + errno_text(errno);
    return false;
  }
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text->append(buf, n);
  const bool failed = std::ferror(f) != 0;
  const int e = errno;
  std::fclose(f);
  if (failed) *error = "cannot read " + path + ": " + errno_text(e);
  return !failed;
}

int run_add(const ViewCli& s, Io& io) {
  std::string text, error;
  const std::string shown = s.file == "-" ? "<stdin>" : s.file;
  if (s.file == "-") {
    text.assign(std::istreambuf_iterator<char>(io.in), std::istreambuf_iterator<char>());
  } else if (!read_file(s.file, &text, &error)) {
    return complain(io, "add", error, kExitUsage);
  }
  json view;
  try {
    view = json::parse(text);
  } catch (const json::exception& e) {
    return complain(io, "add", shown + ": not JSON: " + e.what(), kExitUsage);
  }
  if (!view.is_object()) {
    return complain(io, "add", shown + ": expected a JSON object (a view, SPEC S6)", kExitUsage);
  }
  const json req{{"verb", "add"}, {"source", s.file}, {"view", std::move(view)}};
  if (to_line(req).size() > kMaxLine) {
    return complain(
        io, "add",
        shown + ": over the daemon's limit of " + std::to_string(kMaxLine) + " bytes a request",
        kExitUsage);
  }
  std::unique_ptr<Client> client;
  json r;
  if (const int rc = exchange(s, io, "add", req, &client, &r)) return rc;
  if (const std::string note = text_of(r, "note"); !note.empty()) {
    io.out << note << "\n";
    return 0;
  }
  const json v = r.contains("view") && r["view"].is_object() ? r["view"] : json::object();
  const std::string name = text_of(v, "name"), mp = text_of(v, "mountpoint"),
                    cdi = text_of(v, "cdi_device");
  io.out << "view" << (name.empty() ? "" : " " + name)
         << (mp.empty() ? " added" : " mounted at " + mp)
         << (cdi.empty() ? "" : " (CDI device " + cdi + ")") << "\n";
  return 0;
}

int run_rm(const ViewCli& s, Io& io) {
  std::unique_ptr<Client> client;
  json r;
  if (const int rc = exchange(s, io, "rm", json{{"verb", "rm"}, {"name", s.name}}, &client, &r)) {
    return rc;
  }
  const std::string note = text_of(r, "note");
  io.out << (note.empty() ? "view " + s.name + " removed" : note) << "\n";
  return 0;
}

std::string join_list(const json& list, const std::function<std::string(const json&)>& cell) {
  if (!list.is_array() || list.empty()) return "-";
  std::string s;
  for (const auto& item : list) s += (s.empty() ? "" : ",") + cell(item);
  return s;
}

std::vector<std::string> ls_row(const json& v) {
  const auto or_dash = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
  const json none = json::array();
  const json& devices = v.contains("devices") ? v["devices"] : none;
  const json& claims = v.contains("claims") ? v["claims"] : none;
  return {or_dash(text_of(v, "name")),
          or_dash(text_of(v, "mountpoint")),
          or_dash(text_of(v, "uid")),
          join_list(devices,
                    [](const json& d) { return d.is_string() ? d.get<std::string>() : dump(d); }),
          or_dash(text_of(v, "open_handles")),
          join_list(claims, [](const json& c) {
            if (!c.is_object()) return dump(c);
            const std::string pid = text_of(c, "pid");
            return text_of(c, "bdf") + (pid.empty() ? "" : "(pid " + pid + ")");
          })};
}

void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

int run_ls(const ViewCli& s, Io& io) {
  std::unique_ptr<Client> client;
  json r;
  if (const int rc = exchange(s, io, "ls", json{{"verb", "ls"}}, &client, &r)) return rc;
  const json views = r.contains("views") && r["views"].is_array() ? r["views"] : json::array();
  if (s.json) {
    io.out << dump(views, 2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows{
      {"NAME", "MOUNTPOINT", "UID", "DEVICES", "HANDLES", "CLAIMS"}};
  for (const auto& v : views) {
    if (v.is_object()) rows.push_back(ls_row(v));
  }
  print_table(io.out, rows);
  return 0;
}

std::string millis(uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(ns) / 1e6);
  return buf;
}

// The daemon's lock contention since it started: every named lock that has
// waited, the longest waits first (README "Views at runtime").
int run_locks(const ViewCli& s, Io& io) {
  std::unique_ptr<Client> client;
  json r;
  if (const int rc = exchange(s, io, "locks", json{{"verb", "locks"}}, &client, &r)) return rc;
  const json locks = r.contains("locks") && r["locks"].is_array() ? r["locks"] : json::array();
  if (s.json) {
    io.out << dump(locks, 2) << "\n";
    return 0;
  }
  if (r.value("counted", true) != true) {
    io.err << "pcifs: view locks: this daemon does not count contention (a TSan build)\n";
  }
  std::vector<std::vector<std::string>> rows{{"LOCK", "CONTENDED", "WAITED_MS"}};
  for (const auto& l : locks) {
    if (!l.is_object()) continue;
    rows.push_back(
        {text_of(l, "name"), text_of(l, "contended"), millis(l.value("wait_ns", uint64_t{0}))});
  }
  print_table(io.out, rows);
  return 0;
}

// Until the daemon closes (status 3, said on stderr) or SIGINT ends us.
int run_watch(const ViewCli& s, Io& io) {
  std::unique_ptr<Client> client;
  json r;
  if (const int rc = exchange(s, io, "watch", json{{"verb", "watch"}}, &client, &r)) return rc;
  for (;;) {
    std::string error;
    auto ev = client->next_event(&error);
    if (!ev) return complain(io, "watch", error, kExitUnreachable);
    io.out << dump(*ev) << std::endl;  // flushed: a pipe reader sees each event at once
  }
}

}  // namespace

void add_view_cli(CLI::App& app, ViewCli& state) {
  const std::string control_help = "the host daemon's control socket";
  state.view =
      app.add_subcommand("view",
                         "add, remove, list or watch the views of a host daemon, or see its locks "
                         "(through its root-only control socket)");
  state.view->require_subcommand(1);
  state.view->add_option("--control", state.control, control_help)->capture_default_str();
  state.add = state.view->add_subcommand("add", "mount a view (FILE.json, or - for stdin)");
  state.add->add_option("FILE", state.file, "the view (SPEC S6), - for stdin")->required();
  state.rm = state.view->add_subcommand("rm", "unmount a view and revoke everything of it");
  state.rm->add_option("NAME", state.name, "the view's name")->required();
  state.ls = state.view->add_subcommand("ls", "list the views, their devices and claims");
  state.ls->add_flag("--json", state.json, "print the views as a JSON array");
  state.watch = state.view->add_subcommand("watch", "print the daemon's events, one JSON a line");
  state.locks = state.view->add_subcommand(
      "locks", "the daemon's lock contention since it started (waits per named lock)");
  state.locks->add_flag("--json", state.json, "print the locks as a JSON array");
  for (CLI::App* leaf : {state.add, state.rm, state.ls, state.watch, state.locks}) {
    leaf->add_option("--control", state.control, control_help)->capture_default_str();
  }
}

std::optional<int> run_view_cli(const CLI::App& app, const ViewCli& state) {
  return run_view_cli(app, state, std::cin, std::cout, std::cerr);
}

std::optional<int> run_view_cli(const CLI::App& app, const ViewCli& state, std::istream& in,
                                std::ostream& out, std::ostream& err) {
  if (!state.view || !app.got_subcommand(state.view)) return std::nullopt;
  Io io{in, out, err};
  if (state.add && state.add->parsed()) return run_add(state, io);
  if (state.rm && state.rm->parsed()) return run_rm(state, io);
  if (state.ls && state.ls->parsed()) return run_ls(state, io);
  if (state.watch && state.watch->parsed()) return run_watch(state, io);
  if (state.locks && state.locks->parsed()) return run_locks(state, io);
  return complain(io, "", "expected one of add, rm, ls, watch, locks", kExitUsage);
}

}  // namespace pcifs::control
