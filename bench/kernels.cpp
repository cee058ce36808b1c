// Micro-benchmark of the non-GEMM kernels of a training step, each fast path against its plain
// (double-precision) reference: median of --reps runs, fast and reference runs ALTERNATING so both
// see the same machine load; GB/s (memory-bound kernels) or GFLOP/s (attention) from the wall time,
// and the speed-up in wall and in process CPU time (use --threads 1 on a loaded machine: its CPU
// time is the kernel's own cost, its wall time includes waiting for a core).
// Shapes: the Pythia-70m LoRA step of bench_lora_step (b4 × s256, hidden 512, 8 heads of 64,
// intermediate 2048, vocabulary 50304). Where the reference is too slow at that size (attention, the
// 50k-vocabulary softmax) it runs on a slice and its time is scaled up by the slice ratio (marked *).
//   bench_kernels [--reps N] [--only SUBSTRING] [--threads N]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/sysinfo.h"
#include "core/threads.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/lm_head_loss.h"
#include "kernels/norm.h"

using namespace llmtune;

namespace {

constexpr int64_t kB = 4, kT = 256, kN = kB * kT, kE = 512, kH = 8, kD = 64, kI = 2048, kV = 50304;

std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * rng.normal();
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

struct Case {
  std::string name;
  std::function<void()> fast, ref;
  double ref_scale = 1.0;       // reference time × this = the reference's time at the fast path's size
  double bytes = 0, flops = 0;  // per fast call (one of them)
};

// Process CPU time: on a loaded shared machine a single-threaded run's wall time mostly measures the
// wait for a core; its CPU time does not (with several threads it also counts barrier spinning).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Timing {
  double wall, cpu;
};

Timing time_call(const std::function<void()>& f, double scale) {
  const double w0 = now_seconds(), c0 = cpu_seconds();
  f();
  return {(now_seconds() - w0) * scale, (cpu_seconds() - c0) * scale};
}

Timing median(const std::vector<Timing>& t) {
  std::vector<double> w, c;
  for (const Timing& x : t) w.push_back(x.wall), c.push_back(x.cpu);
  return {median(w), median(c)};
}

void run_case(const Case& c, int reps) {
  std::vector<Timing> tf, tr;
  c.fast();  // warm-up (first touch, thread start)
  const int ref_reps = std::max(1, std::min(reps, 3));
  for (int r = 0; r < reps; ++r) {
    tf.push_back(time_call(c.fast, 1.0));
    if (r < ref_reps) tr.push_back(time_call(c.ref, c.ref_scale));
  }
  const Timing f = median(tf), rf = median(tr);
  char rate[64];
  if (c.flops > 0)
    std::snprintf(rate, sizeof rate, "%7.1f GFLOP/s", c.flops / f.wall * 1e-9);
  else
    std::snprintf(rate, sizeof rate, "%7.2f GB/s   ", c.bytes / f.wall * 1e-9);
  std::printf(
      "%-28s fast %8.3f ms (cpu %8.3f) %s | reference%s %9.2f ms (cpu %9.2f) | speed-up %6.1fx (cpu "
      "%6.1fx)\n",
      c.name.c_str(), f.wall * 1e3, f.cpu * 1e3, rate, c.ref_scale != 1.0 ? "*" : " ", rf.wall * 1e3,
      rf.cpu * 1e3, rf.wall / f.wall, rf.cpu / f.cpu);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 9, threads = 0;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value (see the top of bench/kernels.cpp)\n", k.c_str());
      return 2;
    }
    if (k == "--reps")
      reps = std::atoi(argv[++i]);
    else if (k == "--only")
      only = argv[++i];
    else if (k == "--threads")
      threads = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "unknown option %s (see the top of bench/kernels.cpp)\n", k.c_str());
      return 2;
    }
  }
  set_num_threads(threads);
  std::printf("bench_kernels: %d threads, median of %d (reference: of <= 3), Pythia-70m step shapes\n",
              num_threads(), reps);
  std::vector<Case> cases;

  // ---- attention (causal, no segments) ----
  AttentionDims ad;
  ad.B = kB, ad.Tq = ad.Tk = kT, ad.H = ad.Hkv = kH, ad.D = kD;
  AttentionDims ad_ref = ad;  // one (batch row, head) slice for the reference
  ad_ref.B = 1, ad_ref.H = ad_ref.Hkv = 1;
  const double slices = double(kB * kH);
  const size_t qn = size_t(kN * kH * kD);
  auto q = random_floats(qn, 1), k = random_floats(qn, 2), v = random_floats(qn, 3),
       dout = random_floats(qn, 4);
  std::vector<float> out(qn), lse(size_t(kB * kH * kT)), dq(qn), dk(qn), dv(qn);
  // The reference slice: b = 0, head 0 of contiguous copies.
  auto slice = [&](const std::vector<float>& x) {
    std::vector<float> s(size_t(kT * kD));
    for (int64_t t = 0; t < kT; ++t) std::memcpy(&s[size_t(t * kD)], &x[size_t(t * kH * kD)], kD * 4);
    return s;
  };
  auto qs = slice(q), ks = slice(k), vs = slice(v), ds = slice(dout);
  std::vector<float> out_s(size_t(kT * kD)), lse_s(static_cast<size_t>(kT)), dq_s(out_s.size()),
      dk_s(out_s.size()), dv_s(out_s.size());
  const double attn_fwd_flops = 2.0 * 2.0 * kB * kH * (kT * (kT + 1) / 2.0) * kD;  // QKᵀ and PV, causal
  cases.push_back(
      {"attention fwd",
       [&] { attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), nullptr, nullptr, ad); },
       [&] {
         reference::attention_forward(out_s.data(), lse_s.data(), qs.data(), ks.data(), vs.data(), nullptr,
                                      nullptr, ad_ref);
       },
       slices, 0, attn_fwd_flops});
  cases.push_back({"attention bwd",
                   [&] {
                     attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                                        q.data(), k.data(), v.data(), nullptr, nullptr, ad);
                   },
                   [&] {
                     reference::attention_backward(dq_s.data(), dk_s.data(), dv_s.data(), ds.data(),
                                                   out_s.data(), lse_s.data(), qs.data(), ks.data(),
                                                   vs.data(), nullptr, nullptr, ad_ref);
                   },
                   slices, 0, 2.5 * attn_fwd_flops});  // five block products vs the forward's two

  // ---- LM head softmax / cross-entropy over the vocabulary (the non-GEMM part of lm_head_loss) ----
  // One chunk of lm_head_loss (8 Mi floats of logits: 166 rows of 50304), transformed in place
  // again and again (the gradient of one run is the next run's logits: same work, finite values).
  const int64_t chunk_rows = (int64_t(1) << 23) / kV, ref_rows = 2;
  auto logits = random_floats(size_t(chunk_rows * kV), 5, 3.f);
  cases.push_back({"softmax+CE, 166 x 50k logits",
                   [&] {
#pragma omp parallel for schedule(static)
                     for (int64_t r = 0; r < chunk_rows; ++r)
                       softmax_xent_row(logits.data() + r * kV, kV, int32_t(r * 7 % kV), true, 1.f);
                   },
                   [&] {
                     for (int64_t r = 0; r < ref_rows; ++r)
                       reference::softmax_xent_row(logits.data() + r * kV, kV, int32_t(r * 7 % kV), true,
                                                   1.f);
                   },
                   double(chunk_rows) / ref_rows, double(chunk_rows * kV) * 4, 0});

  // ---- activations over [N, I] ----
  const size_t an = size_t(kN * kI);
  auto ax = random_floats(an, 6, 2.f), ag = random_floats(an, 7), aup = random_floats(an, 8);
  std::vector<float> ay(an), adx(an), adu(an);
  for (auto [name, act] : {std::pair<const char*, Activation>{"gelu (erf)", Activation::GeluErf},
                           {"gelu (tanh)", Activation::GeluTanh},
                           {"silu", Activation::Silu}}) {
    cases.push_back({std::string(name) + " fwd",
                     [&, act] { activation_forward(ay.data(), ax.data(), int64_t(an), act); },
                     [&, act] { reference::activation_forward(ay.data(), ax.data(), int64_t(an), act); }, 1.0,
                     double(an) * 8, 0});
    cases.push_back(
        {std::string(name) + " bwd",
         [&, act] { activation_backward(adx.data(), ag.data(), ax.data(), int64_t(an), act); },
         [&, act] { reference::activation_backward(adx.data(), ag.data(), ax.data(), int64_t(an), act); },
         1.0, double(an) * 16, 0});
  }
  cases.push_back({"swiglu fwd", [&] { swiglu_forward(ay.data(), ax.data(), aup.data(), int64_t(an)); },
                   [&] { reference::swiglu_forward(ay.data(), ax.data(), aup.data(), int64_t(an)); }, 1.0,
                   double(an) * 12, 0});
  cases.push_back(
      {"swiglu bwd",
       [&] { swiglu_backward(adx.data(), adu.data(), ag.data(), ax.data(), aup.data(), int64_t(an)); },
       [&] {
         reference::swiglu_backward(adx.data(), adu.data(), ag.data(), ax.data(), aup.data(), int64_t(an));
       },
       1.0, double(an) * 28, 0});

  // ---- norms over [N, E] ----
  const size_t nn = size_t(kN * kE);
  auto nx = random_floats(nn, 9, 2.f), ng = random_floats(nn, 10), nw = random_floats(size_t(kE), 11),
       nb = random_floats(size_t(kE), 12);
  std::vector<float> ny(nn), ndx(nn), nmean(static_cast<size_t>(kN)), nrstd(static_cast<size_t>(kN)),
      ndw(static_cast<size_t>(kE)), ndb(static_cast<size_t>(kE));
  cases.push_back({"layernorm fwd",
                   [&] {
                     layernorm_forward(ny.data(), nmean.data(), nrstd.data(), nx.data(), nw.data(), nb.data(),
                                       kN, kE, 1e-5f);
                   },
                   [&] {
                     reference::layernorm_forward(ny.data(), nmean.data(), nrstd.data(), nx.data(), nw.data(),
                                                  nb.data(), kN, kE, 1e-5f);
                   },
                   1.0, double(nn) * 8, 0});
  cases.push_back({"layernorm bwd (dx only)",
                   [&] {
                     layernorm_backward(ndx.data(), nullptr, nullptr, ng.data(), nx.data(), nw.data(),
                                        nmean.data(), nrstd.data(), kN, kE);
                   },
                   [&] {
                     reference::layernorm_backward(ndx.data(), nullptr, nullptr, ng.data(), nx.data(),
                                                   nw.data(), nmean.data(), nrstd.data(), kN, kE);
                   },
                   1.0, double(nn) * 16, 0});
  cases.push_back({"layernorm bwd (dx, dw, db)",
                   [&] {
                     layernorm_backward(ndx.data(), ndw.data(), ndb.data(), ng.data(), nx.data(), nw.data(),
                                        nmean.data(), nrstd.data(), kN, kE);
                   },
                   [&] {
                     reference::layernorm_backward(ndx.data(), ndw.data(), ndb.data(), ng.data(), nx.data(),
                                                   nw.data(), nmean.data(), nrstd.data(), kN, kE);
                   },
                   1.0, double(nn) * 16, 0});
  cases.push_back(
      {"rmsnorm fwd", [&] { rmsnorm_forward(ny.data(), nrstd.data(), nx.data(), nw.data(), kN, kE, 1e-5f); },
       [&] { reference::rmsnorm_forward(ny.data(), nrstd.data(), nx.data(), nw.data(), kN, kE, 1e-5f); }, 1.0,
       double(nn) * 8, 0});
  cases.push_back(
      {"rmsnorm bwd (dx only)",
       [&] { rmsnorm_backward(ndx.data(), nullptr, ng.data(), nx.data(), nw.data(), nrstd.data(), kN, kE); },
       [&] {
         reference::rmsnorm_backward(ndx.data(), nullptr, ng.data(), nx.data(), nw.data(), nrstd.data(), kN,
                                     kE);
       },
       1.0, double(nn) * 16, 0});

  // ---- embedding lookup [N, E] from a 50k × E table ----
  auto table = random_floats(size_t(kV * kE), 13);
  std::vector<int32_t> ids(static_cast<size_t>(kN));
  for (int64_t i = 0; i < kN; ++i) ids[size_t(i)] = int32_t((i * 7919) % kV);
  cases.push_back({"embedding fwd",
                   [&] { embedding_forward(ny.data(), ids.data(), table.data(), kN, kE, kV); },
                   [&] { reference::embedding_forward(ny.data(), ids.data(), table.data(), kN, kE, kV); },
                   1.0, double(nn) * 8, 0});

  for (const Case& c : cases)
    if (only.empty() || c.name.find(only) != std::string::npos) run_case(c, reps);
  return 0;
}
