// rng.h: a small, fast, serialisable random number generator (xoshiro256**) seeded by splitmix64.
//
// Every source of randomness (initialisation, shuffling, dropout, augmentation) takes an Rng& from
// its caller: no hidden global generator. Its whole state is four words, saved in checkpoints so that a
// resumed run draws exactly the numbers an uninterrupted one would.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace qatlab {

class Rng {
 public:
  using State = std::array<uint64_t, 4>;

  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t x = seed;
    for (auto& w : s_) w = splitmix64(x);
    has_spare_normal_ = false;
  }

  // A generator for an independent stream, e.g. Rng::derive(seed, epoch) for epoch's shuffle.
  static Rng derive(uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ULL * (stream + 1));
    return Rng(splitmix64(x));
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1), 24 random bits: exactly representable as a float.
  float uniform() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

  // Uniform integer in [0, n), n > 0 (Lemire's nearly-divisionless method, unbiased).
  uint64_t below(uint64_t n) {
    unsigned __int128 m = static_cast<unsigned __int128>(next_u64()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = -n % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next_u64()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  // Standard normal (Box-Muller; the second value of each pair is kept for the next call).
  float normal() {
    if (has_spare_normal_) {
      has_spare_normal_ = false;
      return spare_normal_;
    }
    double u1 = 0.0;
    while (u1 <= 1e-12) u1 = (next_u64() >> 11) * (1.0 / 9007199254740992.0);
    const double u2 = (next_u64() >> 11) * (1.0 / 9007199254740992.0);
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_normal_ = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
    has_spare_normal_ = true;
    return static_cast<float>(r * std::cos(2.0 * M_PI * u2));
  }

  // The state that reproduces the stream. A pending Box-Muller spare is dropped on save, so save
  // only between whole uses (at epoch boundaries), where none is pending by construction of callers.
  State state() const { return s_; }
  void set_state(const State& s) {
    s_ = s;
    has_spare_normal_ = false;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  State s_{};
  bool has_spare_normal_ = false;
  float spare_normal_ = 0.0f;
};

}  // namespace qatlab
