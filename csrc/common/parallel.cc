// std::thread implementation of ParallelFor for callers outside TensorFlow (the _C module).
#include "common/parallel.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace iapdcnn {

namespace {
constexpr int64_t kMinCostPerShard = 20000;  // below this, threads cost more than they save

void RunThreaded(int64_t total, int64_t cost_per_unit,
                 const std::function<void(int64_t, int64_t)>& fn) {
  if (total <= 0) return;
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t cost = std::max<int64_t>(1, cost_per_unit);
  const int64_t by_cost = std::max<int64_t>(1, total * cost / kMinCostPerShard);
  const int64_t shards = std::min({hw, total, by_cost});
  if (shards <= 1) {
    fn(0, total);
    return;
  }
  const int64_t block = (total + shards - 1) / shards;
  std::vector<std::thread> threads;
  threads.reserve(shards - 1);
  int64_t s = 1;
  for (; s < shards; ++s) {
    const int64_t b = s * block, e = std::min(total, b + block);
    if (b >= e) continue;
    try {
      threads.emplace_back([&fn, b, e] { fn(b, e); });
    } catch (...) {  // no thread to be had (resource limits): the rest runs on this one
      break;
    }
  }
  fn(0, std::min(total, block));
  for (; s < shards; ++s) {
    const int64_t b = s * block, e = std::min(total, b + block);
    if (b < e) fn(b, e);
  }
  for (auto& t : threads) t.join();
}
}  // namespace

const ParallelFor& DefaultParallelFor() {
  static const ParallelFor pf = RunThreaded;
  return pf;
}

int64_t TargetTasks(int64_t per_thread) {
  static const int64_t hw = std::thread::hardware_concurrency();
  return std::max<int64_t>(2, per_thread * hw);
}

const ParallelFor& SerialParallelFor() {
  static const ParallelFor pf = [](int64_t total, int64_t,
                                   const std::function<void(int64_t, int64_t)>& fn) {
    if (total > 0) fn(0, total);
  };
  return pf;
}

}  // namespace iapdcnn
