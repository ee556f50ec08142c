// Small status type returned by every csrc entry point. csrc knows nothing of TensorFlow or
// Python: the TF adapter turns a failed Status into errors::InvalidArgument / ResourceExhausted /
// Internal, the pybind11 binding into a Python ValueError / MemoryError / RuntimeError.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace iapdcnn {

class Status {
 public:
  enum class Code { kOk, kInvalidArgument, kResourceExhausted, kInternal };

  Status() = default;
  static Status OK() { return Status(); }
  // A bad argument (shape, range, a size that does not fit int64): the message names it.
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  // An allocation (scratch or output) failed.
  static Status ResourceExhausted(std::string msg) {
    return Status(Code::kResourceExhausted, std::move(msg));
  }
  // Anything else a kernel threw.
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  // The same error with "op: " in front when it comes from the shared CUDA helpers (their
  // messages start "cuda: ": CUDA runtime errors, scratch allocation, the cuBLAS wrapper), which
  // know no op; every other message names its op already.
  Status Named(const std::string& op) const {
    if (ok() || msg_.rfind("cuda: ", 0) != 0) return *this;
    return Status(code_, op + ": " + msg_);
  }

 private:
  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string msg_;
};

// Early-return helper for chains of checks.
#define IAPDCNN_RETURN_IF_ERROR(expr) \
  do {                                \
    ::iapdcnn::Status _st = (expr);   \
    if (!_st.ok()) return _st;        \
  } while (0)

// "[2, 3, 4]": how shapes appear in the messages of Validate* functions.
inline std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// A double as Python's repr would write it (the shortest form that reads back the same value):
// 1e-50 stays "1e-50", never "0.000000" as std::to_string writes it.
std::string NumStr(double v);

}  // namespace iapdcnn
