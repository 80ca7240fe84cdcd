// mx8 bench convert: checkpoint conversion throughput against simply reading the input.
//
// Makes a synthetic BF16 checkpoint with Llama-3-8B weight shapes (random values), then times, on
// the same machine and in the same run: a read of every input tensor byte through the mapping (the
// floor of any conversion: it must read its input once), memcpy, and `mx8 convert` with each scheme
// (ds-fp8, mxfp8, mxfp4 from BF16; bf16 back from the ds-fp8 output). Conversion time includes
// planning, writing, fsync and the rename, as a user sees it; the page cache is warm (the input was
// just written), so the read floor is memory, not disk, bandwidth.
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/bench_cpu_util.h"
#include "cli/command.h"
#include "cli/perf_report.h"
#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/convert/convert.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/io/safetensors.h"
#include "mx8/io/safetensors_writer.h"
#include "mx8/util/atomic_file.h"

namespace {

namespace fs = std::filesystem;
using namespace mx8;

struct Args {
  int64_t size_mb = 256;
  std::string threads = "1,2";
  std::string dir;
  mx8::cli::PerfMdTarget perf;
  bool keep = false;
};

// A BF16 checkpoint of about `bytes`: Llama-3-8B layer shapes, layer by layer, plus norms.
std::vector<io::TensorSpec> synthetic_specs(uint64_t bytes) {
  const int64_t h = 4096, kv = 1024, ffn = 14336;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> layer = {
      {"self_attn.q_proj.weight", {h, h}},     {"self_attn.k_proj.weight", {kv, h}},
      {"self_attn.v_proj.weight", {kv, h}},    {"self_attn.o_proj.weight", {h, h}},
      {"mlp.gate_proj.weight", {ffn, h}},      {"mlp.up_proj.weight", {ffn, h}},
      {"mlp.down_proj.weight", {h, ffn}},      {"input_layernorm.weight", {h}},
      {"post_attention_layernorm.weight", {h}}};
  std::vector<io::TensorSpec> specs;
  uint64_t total = 0;
  for (int l = 0; total < bytes; ++l)
    for (const auto& [name, shape] : layer) {
      if (total >= bytes) break;
      io::TensorSpec s{"model.layers." + std::to_string(l) + "." + name, io::DType::BF16, shape};
      total += s.nbytes();
      specs.push_back(s);
    }
  return specs;
}

void write_synthetic(const std::string& folder, const std::vector<io::TensorSpec>& specs) {
  fs::create_directories(folder);
  io::SafetensorsWriter w(folder + "/model.safetensors", specs);
  cli::bench::Rng rng(42);
  std::vector<uint8_t> buf;
  for (const auto& s : w.layout()) {
    buf.resize(s.nbytes());
    for (size_t i = 0; i + 1 < buf.size(); i += 2) {
      const uint16_t b = format::f32_to_bf16_rne(rng.normal(0.02f));
      buf[i] = static_cast<uint8_t>(b);
      buf[i + 1] = static_cast<uint8_t>(b >> 8);
    }
    w.append(buf);
  }
  w.commit();
  write_file_atomically(folder + "/config.json",
                        R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096})");
}

// Best-of-3 seconds to read every tensor byte of a checkpoint through its mapping, on `pool`.
double read_seconds(const std::string& folder, cpu::ThreadPool& pool) {
  auto m = io::SafetensorsModel::open(folder);
  double best = 1e30;
  volatile uint64_t sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = cli::bench::now_s();
    for (const auto& entry : m.tensors()) {
      const auto& t = entry.second;  // not a structured binding: clang 14 cannot capture those
      const size_t words = t->nbytes() / 8, chunk = 1 << 20;
      std::atomic<uint64_t> acc{0};
      pool.parallel_for((words + chunk - 1) / chunk, 1, [&](size_t b, size_t e) {
        uint64_t x = 0;
        for (size_t c = b; c < e; ++c) {
          const size_t w0 = c * chunk, w1 = std::min(words, w0 + chunk);
          for (size_t i = w0; i < w1; ++i) {
            uint64_t v;
            std::memcpy(&v, t->data + 8 * i, 8);
            x += v;
          }
        }
        acc += x;
      });
      sink = sink + acc.load();
    }
    best = std::min(best, cli::bench::now_s() - t0);
  }
  return best;
}

// Best-of-2 GB/s of writing and fsyncing a 256 MB file in `dir`: the floor of writing any output
// durably (on the development machine this, not the CPU, bounds the FP8 conversions).
double write_fsync_gbps(const fs::path& dir) {
  const size_t n = 256u << 20;
  std::vector<uint8_t> buf(n, 0x5A);
  double best = 1e30;
  for (int rep = 0; rep < 2; ++rep) {
    const std::string path = (dir / "write_floor.bin").string();
    const double t0 = cli::bench::now_s();
    AtomicFile f(path);
    f.write(buf.data(), buf.size());
    f.commit();
    best = std::min(best, cli::bench::now_s() - t0);
    fs::remove(path);
  }
  return n / best / 1e9;
}

void run(const Args& a) {
  if (a.size_mb < 1) throw Error("--size-mb must be at least 1");
  const auto threads = cli::bench::parse_int_list(a.threads, "--threads");
  // convert checks its own count, but each count here also starts a pool of its own first.
  for (int64_t t : threads) convert::check_thread_count(t);
  const fs::path root = a.dir.empty()
                            ? fs::temp_directory_path() / ("mx8_bench_convert_" + std::to_string(::getpid()))
                            : fs::path(a.dir);
  if (fs::exists(root / "in")) throw Error((root / "in").string() + " exists; choose another --dir");
  struct Cleanup {
    fs::path p;
    bool keep;
    ~Cleanup() {
      std::error_code ec;
      if (!keep) fs::remove_all(p, ec);
    }
  } cleanup{root, a.keep};
  const auto specs = synthetic_specs(static_cast<uint64_t>(a.size_mb) * 1000000);
  std::fprintf(stderr, "writing a %" PRId64 " MB synthetic BF16 checkpoint to %s ...\n", a.size_mb,
               root.c_str());
  write_synthetic((root / "in").string(), specs);
  uint64_t in_bytes = 0;
  for (const auto& s : specs) in_bytes += s.nbytes();
  const double write_gbps = write_fsync_gbps(root);

  struct Row {
    std::string what;
    int64_t threads;
    double gbps, ratio_read, out_mb, ratio_floor;
  };
  std::vector<Row> rows;
  std::string floors;
  for (int64_t t : threads) {
    cpu::ThreadPool pool(static_cast<int>(t));
    const double read_s = read_seconds((root / "in").string(), pool);
    const double read_gbps = in_bytes / read_s / 1e9;
    const double memcpy_gbps = cli::bench::measure_memcpy_gbps(&pool, 256u << 20);
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%" PRId64 " thread(s): read %.2f GB/s, memcpy %.2f GB/s",
                  floors.empty() ? "" : "; ", t, read_gbps, memcpy_gbps);
    floors += buf;
    rows.push_back({"read input", t, read_gbps, 1.0, 0, 1.0});
    auto convert = [&](const std::string& from, const std::string& to, convert::Scheme scheme,
                       const std::string& label) {
      convert::ConvertOptions o;
      o.scheme = scheme;
      o.threads = static_cast<int>(t);
      o.overwrite = true;
      auto r = convert::convert_checkpoint((root / from).string(), (root / to).string(), o);
      // Floor: read the input once and write the output once, durably; whichever takes longer.
      const double floor_s = std::max(r.in_bytes / (read_gbps * 1e9), r.out_bytes / (write_gbps * 1e9));
      rows.push_back({label, t, r.in_bytes / r.seconds / 1e9, r.in_bytes / r.seconds / 1e9 / read_gbps,
                      r.out_bytes / 1e6, floor_s / r.seconds});
      std::fprintf(stderr, "  %s, %" PRId64 " thread(s): %.2f s\n", label.c_str(), t, r.seconds);
    };
    convert("in", "ds", convert::Scheme::ds_fp8, "bf16 -> ds-fp8 (128x128, ceil)");
    convert("in", "mx8", convert::Scheme::mxfp8, "bf16 -> mxfp8 (1x32)");
    convert("in", "mx4", convert::Scheme::mxfp4, "bf16 -> mxfp4 (1x32)");
    convert("ds", "back", convert::Scheme::bf16, "ds-fp8 -> bf16");
  }

  std::string md = "## Checkpoint conversion (`mx8 bench convert`)\n\n";
  md += "Machine: " + cli::machine_description() + ". Date: " + cli::today_utc() +
        ". Command: `mx8 bench convert --size-mb " + std::to_string(a.size_mb) + " --threads " + a.threads +
        "`.\n\n";
  md += "A synthetic " + std::to_string(in_bytes / 1000000) +
        " MB BF16 checkpoint with Llama-3-8B weight shapes, converted end to end (plan, quantize in row "
        "chunks, "
        "write at final offsets, fsync, rename). GB/s counts the input tensor bytes. The floor is reading "
        "the input "
        "once through the mapping (page cache warm), measured in the same run: " +
        floors + "; writing and fsyncing a file in the scratch folder " +
        std::to_string(write_gbps).substr(0, 5) +
        " GB/s. \"Of floor\" is max(input / read, output / write) over the time taken: 1.0 means the "
        "conversion "
        "runs at the speed of the storage. The machine is shared by several people and its numbers are "
        "noisy.\n\n";
  md +=
      "| what | threads | GB/s (input) | x of reading | output MB | of floor "
      "|\n|---|---:|---:|---:|---:|---:|\n";
  std::printf("%-34s %7s %12s %10s %10s %9s\n", "what", "threads", "GB/s", "x read", "out MB", "of floor");
  for (const auto& r : rows) {
    char line[256];
    std::snprintf(line, sizeof line, "| %s | %" PRId64 " | %.2f | %.3f | %.0f | %.0f%% |\n", r.what.c_str(),
                  r.threads, r.gbps, r.ratio_read, r.out_mb, 100 * r.ratio_floor);
    md += line;
    std::printf("%-34s %7" PRId64 " %12.2f %10.3f %10.0f %8.0f%%\n", r.what.c_str(), r.threads, r.gbps,
                r.ratio_read, r.out_mb, 100 * r.ratio_floor);
  }
  std::printf("floors: %s; write+fsync %.3f GB/s\n", floors.c_str(), write_gbps);
  if (a.perf.write) {
    const std::string path = a.perf.path();
    cli::update_perf_section(path, "convert", md);
    std::printf("updated %s\n", path.c_str());
  }
}

cli::CommandRegistration reg{
    "bench convert", "Checkpoint conversion throughput vs reading the input", [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      app.add_option("--size-mb", a->size_mb, "size of the synthetic BF16 checkpoint (MB)");
      app.add_option("--threads", a->threads, "thread counts to run, e.g. 1,2");
      app.add_option("--dir", a->dir, "scratch folder (default: a new one under /tmp)");
      a->perf.add_options(app);
      app.add_flag("--keep", a->keep, "keep the scratch folder (input and outputs)");
      return [a] { run(*a); };
    }};

}  // namespace
