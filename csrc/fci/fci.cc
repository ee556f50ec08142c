// FCI: the argument rules of fci.h, device-free. Compiled once and used by the CPU and CUDA
// kernels, the TensorFlow adapter and the _C bindings.
#include "fci/fci.h"

#include <string>

#include "common/checked.h"

namespace iapdcnn {

Status ValidateFci(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& y_shape,
                   FciParams* p) {
  if (x_shape.size() != 2) {
    return Status::InvalidArgument("fci: x must be 2-D [n_x, block_len], got shape " +
                                   ShapeStr(x_shape));
  }
  if (y_shape.size() != 2) {
    return Status::InvalidArgument("fci: y must be 2-D [n_y, block_len], got shape " +
                                   ShapeStr(y_shape));
  }
  if (x_shape[1] != y_shape[1]) {
    return Status::InvalidArgument("fci: x and y must have the same block length, got x " +
                                   ShapeStr(x_shape) + " and y " + ShapeStr(y_shape));
  }
  if (x_shape[1] < 1) {
    return Status::InvalidArgument("fci: block_len (last dimension of x and y) must be >= 1, got " +
                                   std::to_string(x_shape[1]));
  }
  IAPDCNN_RETURN_IF_ERROR(CheckedElements("fci", "x", x_shape));
  IAPDCNN_RETURN_IF_ERROR(CheckedElements("fci", "y", y_shape));
  IAPDCNN_RETURN_IF_ERROR(
      CheckedElements("fci", "the output [n_x, n_y]", {x_shape[0], y_shape[0]}));
  p->n_x = x_shape[0];
  p->n_y = y_shape[0];
  p->block_len = x_shape[1];
  return Status::OK();
}

Status ValidateFciBlockSize(int64_t block_size, int64_t height, int64_t width) {
  if (block_size < 1) {
    return Status::InvalidArgument("FCIFilter: block_size must be >= 1, got " +
                                   std::to_string(block_size));
  }
  if ((height >= 0 && block_size > height) || (width >= 0 && block_size > width)) {
    return Status::InvalidArgument("FCIFilter: block_size " + std::to_string(block_size) +
                                   " is larger than the image (" + std::to_string(height) + " x " +
                                   std::to_string(width) +
                                   "); it must be at most the image height and width");
  }
  return Status::OK();
}

Status ValidateFciBlocks(const std::vector<int64_t>& x_shape,
                         const std::vector<int64_t>& labels_shape, int64_t num_classes,
                         FciBlocksParams* p) {
  if (x_shape.size() != 3) {
    return Status::InvalidArgument("fci: x must be 3-D [n, positions, block_len], got shape " +
                                   ShapeStr(x_shape));
  }
  if (labels_shape.size() != 1) {
    return Status::InvalidArgument("fci: labels must be 1-D [n], got shape " +
                                   ShapeStr(labels_shape));
  }
  if (labels_shape[0] != x_shape[0]) {
    return Status::InvalidArgument("fci: labels must have one entry per sample of x: labels has " +
                                   std::to_string(labels_shape[0]) + ", x has " +
                                   std::to_string(x_shape[0]));
  }
  if (x_shape[2] < 1) {
    return Status::InvalidArgument("fci: block_len (last dimension of x) must be >= 1, got " +
                                   std::to_string(x_shape[2]));
  }
  if (num_classes < 1) {
    return Status::InvalidArgument("fci: num_classes must be >= 1, got " +
                                   std::to_string(num_classes));
  }
  p->n = x_shape[0];
  p->positions = x_shape[1];
  p->block_len = x_shape[2];
  p->num_classes = num_classes;
  return Status::OK();
}

Status ValidateFciPrototypes(const FciBlocksParams& p, const std::vector<int64_t>& proto_shape) {
  if (proto_shape.size() != 3 || proto_shape[0] != p.num_classes || proto_shape[1] != p.positions ||
      proto_shape[2] != p.block_len) {
    return Status::InvalidArgument(
        "fci: prototypes must be [num_classes, positions, block_len] = [" +
        std::to_string(p.num_classes) + ", " + std::to_string(p.positions) + ", " +
        std::to_string(p.block_len) + "] to match x, got shape " + ShapeStr(proto_shape));
  }
  return Status::OK();
}

Status CheckFciLabels(const FciBlocksParams& p, const int64_t* labels) {
  for (int64_t i = 0; i < p.n; ++i) {
    if (labels[i] < 0 || labels[i] >= p.num_classes) {
      return Status::InvalidArgument(
          "fci: labels must be in [0, num_classes = " + std::to_string(p.num_classes) +
          "), got labels[" + std::to_string(i) + "] = " + std::to_string(labels[i]));
    }
  }
  return Status::OK();
}

}  // namespace iapdcnn
