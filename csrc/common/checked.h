// Checked 64-bit size arithmetic for every op boundary. Shapes, paddings, dilations and radii come
// from users; the sizes derived from them (an output's element count, a dilated kernel's extent,
// a scratch buffer's bytes) are computed here, where an overflow becomes a clear InvalidArgument
// instead of a wrapped value that a CHECK, an allocator or an index later trips over.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/status.h"

namespace iapdcnn {

// The most elements any tensor (input, output or scratch) may have: its bytes at 8 bytes per
// element, the widest dtype, still fit int64, so no byte count derived from it overflows.
constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 8;

// A non-negative int64 that remembers whether any step of its computation overflowed (or went
// negative). Once overflowed it stays so; value() is then meaningless.
class CheckedInt {
 public:
  constexpr CheckedInt(int64_t v = 0) : v_(v), bad_(v < 0) {}  // NOLINT: implicit on purpose
  bool ok() const { return !bad_; }
  int64_t value() const { return v_; }

  CheckedInt operator*(CheckedInt o) const {
    CheckedInt r;
    r.bad_ = bad_ || o.bad_ || __builtin_mul_overflow(v_, o.v_, &r.v_);
    return r;
  }
  CheckedInt operator+(CheckedInt o) const {
    CheckedInt r;
    r.bad_ = bad_ || o.bad_ || __builtin_add_overflow(v_, o.v_, &r.v_);
    return r;
  }
  // Subtraction that must stay >= 0 (a negative result marks it bad).
  CheckedInt operator-(CheckedInt o) const {
    CheckedInt r;
    r.bad_ = bad_ || o.bad_ || __builtin_sub_overflow(v_, o.v_, &r.v_) || r.v_ < 0;
    return r;
  }
  // ok() and value() <= limit.
  bool FitsIn(int64_t limit) const { return ok() && v_ <= limit; }

 private:
  int64_t v_;
  bool bad_;
};

// The element count of a tensor of shape dims, checked: InvalidArgument "<op>: <what> of shape
// [...] has more than kMaxElements elements" on overflow or a negative dimension.
// Zero-size dimensions count as 1 in the bound: a [0, 2^40, 2^40] tensor has no elements, yet
// NumPy (and anything that multiplies its other dimensions) cannot represent it.
inline Status CheckedElements(const char* op, const std::string& what,
                              const std::vector<int64_t>& dims, int64_t* out = nullptr) {
  CheckedInt n = 1, bound = 1;
  for (int64_t d : dims) {
    n = n * CheckedInt(d);
    bound = bound * CheckedInt(d == 0 ? 1 : d);
  }
  if (!n.FitsIn(kMaxElements) || !bound.FitsIn(kMaxElements)) {
    return Status::InvalidArgument(std::string(op) + ": " + what + " of shape " + ShapeStr(dims) +
                                   " is too large (more than 2^60 elements, or a size that "
                                   "overflows 64-bit arithmetic)");
  }
  if (out != nullptr) *out = n.value();
  return Status::OK();
}

}  // namespace iapdcnn
