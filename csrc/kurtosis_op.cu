// paddle_kure custom operators, CUDA side (registered in kurtosis_op.cc): Paddle
// tensors in, the Paddle-free kernels of kurtosis_cuda.cuh on the tensor's stream.
#include <algorithm>

#include "kurtosis_cuda.cuh"
#include "kurtosis_moments.h"
#include "paddle/extension.h"

namespace {

// Paddle's 16-bit float types hold the same 2 bytes as CUDA's.
template <typename T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<paddle::float16> {
  using type = __half;
};
template <>
struct DeviceType<paddle::bfloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(paddle::float16) == sizeof(__half), "float16 layout");
static_assert(sizeof(paddle::bfloat16) == sizeof(__nv_bfloat16), "bfloat16 layout");

template <typename T>
const typename DeviceType<T>::type* device_data(const paddle::Tensor& t) {
  return reinterpret_cast<const typename DeviceType<T>::type*>(t.data<T>());
}
template <typename T>
typename DeviceType<T>::type* device_data(paddle::Tensor* t) {
  return reinterpret_cast<typename DeviceType<T>::type*>(t->data<T>());
}

// Makes x's GPU the current device while the launchers run (they size their
// grids and launch on the current device), and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(const paddle::Tensor& x) {
    PD_CHECK(cudaGetDevice(&previous_) == cudaSuccess, "cudaGetDevice failed");
    const int device = x.place().GetDeviceId();
    if (device != previous_) PD_CHECK(cudaSetDevice(device) == cudaSuccess, "cudaSetDevice failed");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

void check_launch(cudaError_t err, const char* op) {
  PD_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// Scratch for the per-block partial moments, from Paddle's allocator.
paddle::Tensor workspace_for(const paddle::Tensor& x) {
  const int64_t bytes = static_cast<int64_t>(kure_cuda::workspace_bytes(x.numel()));
  return paddle::empty({std::max<int64_t>(bytes, 1)}, paddle::DataType::UINT8, x.place());
}

}  // namespace

// kurtosis_op.cc declares Stats as float64 [paddle_kure::kStatsSize] for its
// InferShape, the CPU layout; the CUDA kernels use the first kure_cuda::kStatsSize.
static_assert(kure_cuda::kStatsSize <= paddle_kure::kStatsSize,
              "the declared Stats output must hold the CUDA kernels' Stats");

std::vector<paddle::Tensor> kurtosis_cuda_forward(const paddle::Tensor& x) {
  const DeviceGuard on_device(x);
  auto out = paddle::empty({}, x.dtype(), x.place());
  auto stats = paddle::full({paddle_kure::kStatsSize}, 0.0, paddle::DataType::FLOAT64, x.place());
  auto workspace = workspace_for(x);
  PD_DISPATCH_FLOATING_AND_HALF_TYPES(x.dtype(), "kurtosis_cuda", ([&] {
    check_launch(kure_cuda::kurtosis(device_data<data_t>(x), x.numel(), device_data<data_t>(&out),
                                     stats.data<double>(), workspace.data<uint8_t>(), x.stream()),
                 "kurtosis");
  }));
  return {out, stats};
}

paddle::Tensor kurtosis_cuda_backward(const paddle::Tensor& x, const paddle::Tensor& stats,
                                      const paddle::Tensor& grad_out) {
  const DeviceGuard on_device(x);
  auto grad_x = paddle::empty(x.shape(), x.dtype(), x.place());
  PD_DISPATCH_FLOATING_AND_HALF_TYPES(x.dtype(), "kurtosis_grad_cuda", ([&] {
    check_launch(kure_cuda::kurtosis_grad(device_data<data_t>(x), x.numel(), stats.data<double>(),
                                          device_data<data_t>(grad_out),
                                          device_data<data_t>(&grad_x), x.stream()),
                 "kurtosis_grad");
  }));
  return grad_x;
}

paddle::Tensor kurtosis_decay_cuda(const paddle::Tensor& x, double coeff, double target,
                                   double l2_coeff) {
  const DeviceGuard on_device(x);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  auto workspace = workspace_for(x);
  PD_DISPATCH_FLOATING_AND_HALF_TYPES(x.dtype(), "kurtosis_decay_cuda", ([&] {
    check_launch(kure_cuda::kurtosis_decay(device_data<data_t>(x), x.numel(), coeff, target,
                                           l2_coeff, device_data<data_t>(&out), nullptr,
                                           workspace.data<uint8_t>(), x.stream()),
                 "kurtosis_decay");
  }));
  return out;
}

// Looked up by paddle_kure.build_info() (ctypes): present only in CUDA builds.
extern "C" int paddle_kure_cuda_runtime_version() { return CUDART_VERSION; }
