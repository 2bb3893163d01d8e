// sweep.cpp: the study's grid, per-cell result files, the summary over seeds and the result files.
#include "quant/workflow/sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>

#include "core/format.h"

namespace qatlab {

SweepMethod parse_sweep_method(const std::string& name) {
  // kSweepMethods in the enum's order.
  constexpr SweepMethod kMethods[] = {SweepMethod::PtqMinMax, SweepMethod::PtqHistogram, SweepMethod::QatMinMax,
                                      SweepMethod::Lsq, SweepMethod::Pact};
  const auto it = std::find(kSweepMethods.begin(), kSweepMethods.end(), name);
  if (it == kSweepMethods.end()) throw std::invalid_argument("unknown sweep method '" + name + "'");
  return kMethods[it - kSweepMethods.begin()];
}

bool sweep_method_is_ptq(const std::string& method) { return method.rfind("ptq-", 0) == 0; }

std::string BitPair::label() const {
  std::string s = "W";  // (appended piece by piece: GCC 12 warns, wrongly, on "W" + std::string)
  s += std::to_string(wbits);
  s += 'A';
  s += std::to_string(abits);
  return s;
}

namespace {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, sep)) {
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \t") + 1);
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

int parse_bits(const std::string& s, const std::string& entry) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || s.empty() || v < 2 || v > 8)
    throw std::invalid_argument("bit pair '" + entry + "': bits must be whole numbers in 2..8");
  return v;
}

}  // namespace

std::vector<BitPair> parse_bit_pairs(const std::string& text) {
  std::vector<BitPair> pairs;
  for (const std::string& entry : split(text, ',')) {
    const size_t slash = entry.find('/');
    if (slash == std::string::npos)
      throw std::invalid_argument("bit pair '" + entry + "' must be W/A, e.g. 4/8 (weights 4 bits, activations 8)");
    const BitPair p{parse_bits(entry.substr(0, slash), entry), parse_bits(entry.substr(slash + 1), entry)};
    if (std::find(pairs.begin(), pairs.end(), p) != pairs.end())
      throw std::invalid_argument("bit pair '" + entry + "' is listed twice");
    pairs.push_back(p);
  }
  if (pairs.empty()) throw std::invalid_argument("no bit pairs given (e.g. 8/8,4/4)");
  return pairs;
}

std::vector<std::string> parse_name_list(const std::string& text, const std::vector<std::string>& allowed,
                                         const std::string& what) {
  std::vector<std::string> names;
  for (const std::string& name : split(text, ',')) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw std::invalid_argument("unknown " + what + " '" + name + "' (choose from " + list + ")");
    }
    if (std::find(names.begin(), names.end(), name) != names.end())
      throw std::invalid_argument(what + " '" + name + "' is listed twice");
    names.push_back(name);
  }
  if (names.empty()) throw std::invalid_argument("no " + what + " given");
  return names;
}

std::string SweepCell::id() const {
  return method + "-" + granularity + "-w" + std::to_string(bits.wbits) + "a" + std::to_string(bits.abits) + "-s" +
         std::to_string(seed);
}

// ------------------------------------------------------------------------------------ cell results

std::string cell_result_ini(const CellResult& r) {
  std::ostringstream os;
  os.precision(10);
  os << "cell = " << r.cell.id() << "\n";
  os << "key = " << r.key << "\n";
  os << "ok = " << (r.ok ? 1 : 0) << "\n";
  if (!r.ok) os << "error = " << r.error << "\n";
  os << "sim_accuracy = " << r.sim_accuracy << "\n";
  os << "int_accuracy = " << r.int_accuracy << "\n";
  os << "top1_agreement = " << r.top1_agreement << "\n";
  if (r.exact_identical >= 0) os << "exact_identical = " << r.exact_identical << "\n";
  os << "int_file_bytes = " << r.int_file_bytes << "\n";
  os << "seconds = " << r.seconds << "\n";
  if (!r.schedule.empty()) os << "schedule = " << r.schedule << "\n";
  return os.str();
}

std::optional<CellResult> read_cell_result(const std::string& path, const SweepCell& cell) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return parse_cell_result(text.str(), cell);
}

std::optional<CellResult> parse_cell_result(const std::string& ini, const SweepCell& cell) {
  if (ini_value(ini, "cell") != cell.id()) return std::nullopt;
  CellResult r;
  r.cell = cell;
  r.key = ini_value(ini, "key");
  r.ok = ini_value(ini, "ok") == "1";
  r.error = ini_value(ini, "error");
  try {
    r.sim_accuracy = std::stod(ini_value(ini, "sim_accuracy"));
    r.int_accuracy = std::stod(ini_value(ini, "int_accuracy"));
    r.top1_agreement = std::stod(ini_value(ini, "top1_agreement"));
    const std::string exact = ini_value(ini, "exact_identical");
    r.exact_identical = exact.empty() ? -1.0 : std::stod(exact);
    r.int_file_bytes = std::stoll(ini_value(ini, "int_file_bytes"));
    r.seconds = std::stod(ini_value(ini, "seconds"));
    r.schedule = ini_value(ini, "schedule");
  } catch (const std::exception&) {
    return std::nullopt;  // a damaged file: run the cell again
  }
  return r;
}

// ----------------------------------------------------------------------------------------- summary

Spread spread_of(const std::vector<double>& v) {
  Spread s;
  s.n = static_cast<int64_t>(v.size());
  if (v.empty()) return s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  double sum = 0.0;
  for (double x : v) sum += x;
  s.mean = sum / s.n;
  if (s.n > 1) {
    double ss = 0.0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(ss / (s.n - 1));
  }
  return s;
}

namespace {

bool in_row(const CellResult& c, const SweepRow& row) {
  return row.method == c.cell.method && row.granularity == c.cell.granularity && row.bits == c.cell.bits &&
         row.policy == c.policy;
}

}  // namespace

std::vector<SweepRow> summarize(const std::vector<CellResult>& results) {
  std::vector<SweepRow> rows;
  for (const CellResult& r : results) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const SweepRow& row) { return in_row(r, row); });
    if (it == rows.end()) {
      SweepRow row;
      row.method = r.cell.method, row.granularity = r.cell.granularity, row.bits = r.cell.bits;
      row.policy = r.policy;
      rows.push_back(row);
      it = rows.end() - 1;
    }
    if (!r.schedule.empty() && it->schedule.find(r.schedule) == std::string::npos)
      it->schedule += (it->schedule.empty() ? "" : " / ") + r.schedule;
    if (!r.ok) {
      ++it->seeds_failed;
      continue;
    }
    if (it->seeds_ok++ == 0) it->int_file_bytes = r.int_file_bytes;
  }
  for (SweepRow& row : rows) {
    std::vector<double> sim, integer, agree, exact;
    for (const CellResult& r : results)
      if (r.ok && in_row(r, row)) {
        sim.push_back(100 * r.sim_accuracy);
        integer.push_back(100 * r.int_accuracy);
        agree.push_back(100 * r.top1_agreement);
        if (r.exact_identical >= 0) exact.push_back(100 * r.exact_identical);
      }
    row.sim = spread_of(sim), row.integer = spread_of(integer), row.agreement = spread_of(agree);
    row.exact = spread_of(exact);
  }
  return rows;
}

// ------------------------------------------------------------------------------------------- files

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c == '\n' ? ' ' : c);
  return out + "\"";
}

int64_t float_bytes(const SweepReport& r) { return r.floats.empty() ? 0 : r.floats.front().checkpoint_bytes; }

}  // namespace

Spread float_spread(const SweepReport& r) {
  std::vector<double> acc;
  for (const FloatBaseline& f : r.floats) acc.push_back(100 * f.accuracy);
  return spread_of(acc);
}

std::string cells_csv(const SweepReport& r) {
  std::ostringstream os;
  os << "method,granularity,wbits,abits,seed,status,sim_acc,int_acc,top1_agree,int_file_bytes,seconds,error,schedule,"
        "exact_identical,layer_bits\n";
  for (const CellResult& c : r.cells) {
    os << c.cell.method << "," << c.cell.granularity << "," << c.cell.bits.wbits << "," << c.cell.bits.abits << ","
       << c.cell.seed << "," << (c.ok ? "ok" : "failed") << ",";
    if (c.ok)
      os << fixed(100 * c.sim_accuracy, 2) << "," << fixed(100 * c.int_accuracy, 2) << ","
         << fixed(100 * c.top1_agreement, 2) << "," << c.int_file_bytes;
    else
      os << ",,,";
    os << "," << fixed(c.seconds, 1) << "," << csv_field(c.error) << "," << csv_field(c.schedule) << ","
       << (c.ok && c.exact_identical >= 0 ? fixed(100 * c.exact_identical, 2) : "") << ","
       << csv_field(c.policy.empty() ? r.policy : c.policy) << "\n";
  }
  return os.str();
}

std::string results_csv(const SweepReport& r) {
  std::ostringstream os;
  os << "method,granularity,wbits,abits,seeds,failed,sim_acc_mean,sim_acc_std,int_acc_mean,int_acc_std,int_acc_min,"
        "int_acc_max,top1_agree_mean,int_file_bytes,size_vs_float_pct,schedule,exact_identical_min,layer_bits\n";
  const Spread f = float_spread(r);
  os << "float,,32,32," << f.n << ",0," << fixed(f.mean, 2) << "," << fixed(f.std, 2) << "," << fixed(f.mean, 2)
     << "," << fixed(f.std, 2) << "," << fixed(f.min, 2) << "," << fixed(f.max, 2) << ",," << float_bytes(r)
     << ",100.0,,," << csv_field(r.policy) << "\n";
  for (const SweepRow& row : r.rows) {
    os << row.method << "," << row.granularity << "," << row.bits.wbits << "," << row.bits.abits << "," << row.seeds_ok
       << "," << row.seeds_failed << ",";
    const std::string policy = csv_field(row.policy.empty() ? r.policy : row.policy);
    if (row.seeds_ok == 0) {
      os << ",,,,,,,,," << csv_field(row.schedule) << ",," << policy << "\n";
      continue;
    }
    const double pct = float_bytes(r) > 0 ? 100.0 * row.int_file_bytes / float_bytes(r) : 0.0;
    os << fixed(row.sim.mean, 2) << "," << fixed(row.sim.std, 2) << "," << fixed(row.integer.mean, 2) << ","
       << fixed(row.integer.std, 2) << "," << fixed(row.integer.min, 2) << "," << fixed(row.integer.max, 2) << ","
       << fixed(row.agreement.mean, 2) << "," << row.int_file_bytes << "," << fixed(pct, 1) << ","
       << csv_field(row.schedule) << "," << (row.exact.n > 0 ? fixed(row.exact.min, 2) : "") << "," << policy << "\n";
  }
  return os.str();
}

namespace {

std::string json_spread(const Spread& s) {
  return "{\"n\": " + std::to_string(s.n) + ", \"mean\": " + fixed(s.mean, 4) + ", \"std\": " + fixed(s.std, 4) +
         ", \"min\": " + fixed(s.min, 4) + ", \"max\": " + fixed(s.max, 4) + "}";
}

}  // namespace

std::string results_json(const SweepReport& r) {
  std::ostringstream os;
  os << "{\n  \"model\": \"" << json_escape(r.model) << "\",\n  \"dataset\": \"" << json_escape(r.dataset)
     << "\",\n  \"first_last_policy\": \"" << json_escape(r.policy) << "\",\n  \"command\": \""
     << json_escape(r.command) << "\",\n";
  os << "  \"accuracy_unit\": \"percent of the test set\",\n";
  os << "  \"float\": {\"accuracy\": " << json_spread(float_spread(r)) << ", \"checkpoint_bytes\": " << float_bytes(r)
     << ", \"checkpoints\": [";
  for (size_t i = 0; i < r.floats.size(); ++i)
    os << (i ? ", " : "") << "{\"seed\": " << r.floats[i].seed << ", \"path\": \""
       << json_escape(r.floats[i].checkpoint) << "\", \"accuracy\": " << fixed(100 * r.floats[i].accuracy, 2)
       << ", \"bytes\": " << r.floats[i].checkpoint_bytes << "}";
  os << "]},\n";
  if (!r.sources.empty()) {
    os << "  \"merged_from\": [\n";
    for (size_t i = 0; i < r.sources.size(); ++i)
      os << "    {\"dir\": \"" << json_escape(r.sources[i].dir) << "\", \"command\": \""
         << json_escape(r.sources[i].command) << "\"}" << (i + 1 < r.sources.size() ? "," : "") << "\n";
    os << "  ],\n";
  }
  os << "  \"rows\": [\n";
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const SweepRow& row = r.rows[i];
    os << "    {\"method\": \"" << row.method << "\", \"granularity\": \"" << row.granularity
       << "\", \"wbits\": " << row.bits.wbits << ", \"abits\": " << row.bits.abits
       << ", \"seeds_ok\": " << row.seeds_ok << ", \"seeds_failed\": " << row.seeds_failed
       << ", \"sim_accuracy\": " << json_spread(row.sim) << ", \"int_accuracy\": " << json_spread(row.integer)
       << ", \"top1_agreement\": " << json_spread(row.agreement) << ", \"int_file_bytes\": " << row.int_file_bytes
       << ", \"schedule\": \"" << json_escape(row.schedule) << "\"";
    if (!row.policy.empty()) os << ", \"policy\": \"" << json_escape(row.policy) << "\"";
    if (row.exact.n > 0) os << ", \"exact_identical\": " << json_spread(row.exact);
    os << "}" << (i + 1 < r.rows.size() ? "," : "") << "\n";
  }
  os << "  ],\n  \"cells\": [\n";
  for (size_t i = 0; i < r.cells.size(); ++i) {
    const CellResult& c = r.cells[i];
    os << "    {\"id\": \"" << c.cell.id() << "\", \"method\": \"" << c.cell.method << "\", \"granularity\": \""
       << c.cell.granularity << "\", \"wbits\": " << c.cell.bits.wbits << ", \"abits\": " << c.cell.bits.abits
       << ", \"seed\": " << c.cell.seed << ", \"schedule\": \"" << json_escape(c.schedule)
       << "\", \"ok\": " << (c.ok ? "true" : "false");
    if (!c.policy.empty()) os << ", \"policy\": \"" << json_escape(c.policy) << "\"";
    if (c.ok) {
      os << ", \"sim_accuracy\": " << fixed(100 * c.sim_accuracy, 2) << ", \"int_accuracy\": "
         << fixed(100 * c.int_accuracy, 2) << ", \"top1_agreement\": " << fixed(100 * c.top1_agreement, 2)
         << ", \"int_file_bytes\": " << c.int_file_bytes;
      if (c.exact_identical >= 0) os << ", \"exact_identical\": " << fixed(100 * c.exact_identical, 2);
    } else {
      os << ", \"error\": \"" << json_escape(c.error) << "\"";
    }
    os << ", \"seconds\": " << fixed(c.seconds, 1) << "}" << (i + 1 < r.cells.size() ? "," : "") << "\n";
  }
  os << "  ]\n}\n";
  return os.str();
}

std::string signed_fixed(double v, int digits) { return (v >= 0 ? "+" : "") + fixed(v, digits); }

std::string mean_std(const Spread& s) { return s.n > 1 ? fixed(s.mean, 2) + " ± " + fixed(s.std, 2) : fixed(s.mean, 2); }

namespace {

std::vector<std::string> policy_items(const std::string& policy) {
  std::vector<std::string> items;
  for (size_t from = 0; from < policy.size();) {
    size_t to = policy.find(", ", from);
    if (to == std::string::npos) to = policy.size();
    if (to > from) items.push_back(policy.substr(from, to - from));
    from = to + 2;
  }
  return items;
}

bool has_item(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

std::string join_items(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

std::string policy_difference(const std::string& policy, const std::string& common) {
  if (policy.empty()) return "";
  const std::vector<std::string> own = policy_items(policy), shared = policy_items(common);
  std::vector<std::string> diff;
  for (const std::string& item : own)
    if (!has_item(shared, item)) diff.push_back("+ " + item);
  for (const std::string& item : shared)
    if (!has_item(own, item)) diff.push_back("- " + item);
  return join_items(diff);
}

std::string results_table_md(const SweepReport& r) {
  const bool policies = std::any_of(r.rows.begin(), r.rows.end(), [](const SweepRow& row) { return !row.policy.empty(); });
  std::ostringstream os;
  if (policies)
    os << "Layer bits of every row: " << (r.policy.empty() ? "none shared" : r.policy)
       << "; the layer bits column says what a row's cells keep beside or instead of them.\n\n";
  os << "| method | weights | W/A |" << (policies ? " layer bits |" : "")
     << " schedule | seeds | integer graph (%) | vs float | simulation (%) | top-1 agreement (%) "
        "| exact mode identical (%) |\n"
        "| --- | --- | --- |"
     << (policies ? " --- |" : "") << " --- | --- | --- | --- | --- | --- | --- |\n";
  const Spread f = float_spread(r);
  os << "| float | | 32/32 |" << (policies ? " |" : "") << " | " << f.n << " | " << mean_std(f) << " | | | | |\n";
  for (const SweepRow& row : r.rows) {
    os << "| " << row.method << " | " << row.granularity << " | " << row.bits.label() << " |";
    if (policies) os << " " << policy_difference(row.policy, r.policy) << " |";
    os << " " << row.schedule << " | " << row.seeds_ok;
    if (row.seeds_failed > 0) os << " (" << row.seeds_failed << " failed)";
    if (row.seeds_ok == 0) {
      os << " | failed | | | | |\n";
      continue;
    }
    os << " | " << mean_std(row.integer) << " | " << signed_fixed(row.integer.mean - f.mean, 2) << " | "
       << mean_std(row.sim) << " | " << fixed(row.agreement.mean, 2) << " | "
       << (row.exact.n > 0 ? fixed(row.exact.min, 2) : "") << " |\n";
  }
  return os.str();
}

// ------------------------------------------------------------------------------- reading and merging

namespace pt = boost::property_tree;

SweepReport parse_results_json(const std::string& text) {
  pt::ptree t;
  std::istringstream in(text);
  try {
    pt::read_json(in, t);
  } catch (const pt::json_parser_error& e) {
    throw std::invalid_argument("not a JSON file: " + e.message() + " at line " + std::to_string(e.line()));
  }
  SweepReport r;
  try {
    r.model = t.get<std::string>("model");
    r.dataset = t.get<std::string>("dataset");
    r.policy = t.get<std::string>("first_last_policy");
    r.command = t.get<std::string>("command");
    for (const auto& [unused, f] : t.get_child("float.checkpoints")) {
      FloatBaseline b;
      b.seed = f.get<uint64_t>("seed");
      b.checkpoint = f.get<std::string>("path");
      b.accuracy = f.get<double>("accuracy") / 100;
      b.checkpoint_bytes = f.get<int64_t>("bytes", t.get<int64_t>("float.checkpoint_bytes"));
      r.floats.push_back(b);
    }
    if (const auto merged = t.get_child_optional("merged_from"))
      for (const auto& [unused, source] : *merged)
        r.sources.push_back({source.get<std::string>("dir"), source.get<std::string>("command")});
    for (const auto& [unused, c] : t.get_child("cells")) {
      CellResult cell;
      if (!c.get_optional<std::string>("method"))
        throw std::invalid_argument("its cells do not name their method and bits (written by an older qatlab; the "
                                    "same sweep run again with its cells/ in place rewrites it, running nothing)");
      cell.cell.method = c.get<std::string>("method");
      cell.cell.granularity = c.get<std::string>("granularity");
      cell.cell.bits = {c.get<int>("wbits"), c.get<int>("abits")};
      cell.cell.seed = c.get<uint64_t>("seed");
      parse_name_list(cell.cell.method, kSweepMethods, "method");
      parse_name_list(cell.cell.granularity, {"per-tensor", "per-channel"}, "granularity");
      parse_bit_pairs(std::to_string(cell.cell.bits.wbits) + "/" + std::to_string(cell.cell.bits.abits));
      if (c.get<std::string>("id") != cell.cell.id())
        throw std::invalid_argument("cell '" + c.get<std::string>("id") + "' does not match its fields (" +
                                    cell.cell.id() + ")");
      cell.schedule = c.get<std::string>("schedule", "");
      cell.policy = c.get<std::string>("policy", "");
      if (cell.policy == r.policy) cell.policy.clear();
      cell.ok = c.get<bool>("ok");
      cell.seconds = c.get<double>("seconds");
      if (cell.ok) {
        cell.sim_accuracy = c.get<double>("sim_accuracy") / 100;
        cell.int_accuracy = c.get<double>("int_accuracy") / 100;
        cell.top1_agreement = c.get<double>("top1_agreement") / 100;
        cell.int_file_bytes = c.get<int64_t>("int_file_bytes");
        if (const auto exact = c.get_optional<double>("exact_identical")) cell.exact_identical = *exact / 100;
        for (double v : {cell.sim_accuracy, cell.int_accuracy, cell.top1_agreement, std::max(0.0, cell.exact_identical)})
          if (!(v >= 0 && v <= 1)) throw std::invalid_argument("cell " + cell.cell.id() + ": an accuracy outside 0..100 %");
      } else {
        cell.error = c.get<std::string>("error", "");
      }
      r.cells.push_back(cell);
    }
  } catch (const pt::ptree_error& e) {
    throw std::invalid_argument(e.what());
  }
  if (r.floats.empty()) throw std::invalid_argument("no float model listed");
  r.rows = summarize(r.cells);
  return r;
}

SweepReport merge_sweep_reports(const std::vector<std::pair<std::string, SweepReport>>& parts, const std::string& command) {
  if (parts.empty()) throw std::invalid_argument("no sweeps to merge");
  SweepReport m;
  m.command = command;
  const auto& [first_dir, first] = parts.front();
  m.model = first.model, m.dataset = first.dataset;
  // The layer bits every cell of every sweep keeps, in the first sweep's order.
  const auto own_policy = [](const SweepReport& r, const CellResult& c) { return c.policy.empty() ? r.policy : c.policy; };
  std::vector<std::string> common = policy_items(first.policy);
  const auto keep_shared = [&](const std::string& policy) {
    const std::vector<std::string> items = policy_items(policy);
    std::erase_if(common, [&](const std::string& item) { return !has_item(items, item); });
  };
  for (const auto& [unused, r] : parts) {
    keep_shared(r.policy);
    for (const CellResult& c : r.cells) keep_shared(own_policy(r, c));
  }
  m.policy = join_items(common);
  std::map<uint64_t, std::string> float_from;    // seed -> the sweep that listed it first
  std::map<std::string, std::string> cell_from;  // cell id -> its sweep
  for (const auto& [dir, r] : parts) {
    if (r.model != m.model || r.dataset != m.dataset)
      throw std::invalid_argument(dir + " is a sweep of " + r.model + " on " + r.dataset + ", " + first_dir + " of " +
                                  m.model + " on " + m.dataset);
    for (const FloatBaseline& f : r.floats) {
      const auto seen = std::find_if(m.floats.begin(), m.floats.end(), [&](const FloatBaseline& b) { return b.seed == f.seed; });
      if (seen == m.floats.end()) {
        m.floats.push_back(f);
        float_from[f.seed] = dir;
      } else if (std::abs(seen->accuracy - f.accuracy) > 5e-5 || seen->checkpoint_bytes != f.checkpoint_bytes) {
        throw std::invalid_argument("the float models of seed " + std::to_string(f.seed) + " differ: " + fixed(100 * f.accuracy, 2) +
                                    " % in " + dir + ", " + fixed(100 * seen->accuracy, 2) + " % in " + float_from[f.seed]);
      }
    }
    for (const CellResult& c : r.cells) {
      const auto [at, added] = cell_from.emplace(c.cell.id(), dir);
      if (!added) throw std::invalid_argument("cell " + c.cell.id() + " is in both " + at->second + " and " + dir);
      m.cells.push_back(c);
      m.cells.back().policy = own_policy(r, c) == m.policy ? "" : own_policy(r, c);
    }
    m.sources.push_back({dir, r.command});
  }
  // As a table reads: by bits (weights, then activations, high to low), weights, method, seed.
  const auto order = [](const CellResult& c) {
    const auto method = std::find(kSweepMethods.begin(), kSweepMethods.end(), c.cell.method) - kSweepMethods.begin();
    return std::make_tuple(-c.cell.bits.wbits, -c.cell.bits.abits, c.cell.granularity, method, c.cell.seed);
  };
  std::stable_sort(m.cells.begin(), m.cells.end(), [&](const CellResult& a, const CellResult& b) { return order(a) < order(b); });
  m.rows = summarize(m.cells);
  return m;
}

}  // namespace qatlab
