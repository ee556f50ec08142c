// Small status type returned by every csrc entry point. csrc knows nothing of TensorFlow or
// Python: the TF adapter turns a failed Status into errors::InvalidArgument, the pybind11 binding
// into a Python ValueError.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace iapdcnn {

class Status {
 public:
  Status() = default;
  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(std::move(msg)); }

  bool ok() const { return ok_; }
  const std::string& message() const { return msg_; }

 private:
  explicit Status(std::string msg) : ok_(false), msg_(std::move(msg)) {}
  bool ok_ = true;
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

}  // namespace iapdcnn
