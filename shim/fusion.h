// Fusion from the learned graph: conv [-> batch_norm (inference)] [-> relu | relu_] run as
// one oneDNN convolution with the batch norm folded into its weights and the relu as a post-op,
// and linear -> gelu | relu | relu_ as one oneDNN matmul with the activation as a post-op.
//
// Learning. In eager mode the shim sees one op at a time. On a pass where nothing is fused,
// the wrappers note which op consumed which tensor: a convolution's output (the site is the
// convolution's weight tensor) consumed by an inference batch_norm, whose output is consumed
// by relu_/relu. That chain is the site's prediction for later passes.
//
// Predicting. On a later pass the convolution computes the whole chain at once and returns
// a tensor F holding the chain's final values. The predicted batch_norm then returns an alias
// of F, and the predicted relu_ returns it (relu: a new alias). F and the intermediate
// aliases hold values that are wrong for what they stand for (F should hold the raw
// convolution), so each is "tainted" and carries a way to compute its correct value.
//
// Handing over. When a chain's result goes straight into a conv2d (learned like the rest),
// the fused convolution leaves its result in oneDNN's layout and precision (the bytes of
// the program's fp32 tensor hold, say, BF16 NHWC) and the next convolution reads them as
// they are: two reorders saved. That tensor is tainted like the others, its correct value
// being its bytes reordered into the program's layout.
//
// Detecting a failed prediction. While this thread holds tainted tensors, an observer key
// (above the shim's own key) is enabled in the thread; its fallback sees every op and its
// tensor arguments. An op other than the predicted consumer that reads a tainted tensor gets
// it repaired first: the correct value is computed into fresh storage, which the tensor then
// points to (its aliases keep the fused storage, which is right for them). The site's fusion
// is switched off. An op that reads the convolution's input or weight while a tainted
// tensor depends on them also gets the tainted tensor repaired first, so a repair never
// computes from changed inputs. A tainted tensor that dies unread (the usual case: `out = bn(out)`
// rebinds the name) costs nothing. Reads that bypass the dispatcher (.numpy() of an inner
// tensor, a forward hook using data_ptr) can see fused values: IPEX_FUSION=0 turns fusion off.
//
// Residual blocks. `out = bn(conv(...)); out += identity; relu_(out)` is one convolution with
// a sum post-op: when the identity is the block's input (learned as the input of an earlier
// convolution), the convolution adds it and add_ is answered; when it is computed later
// (`out += downsample(x)`), the downsample convolution adds `out` (kept in oneDNN's layout by
// its own convolution), over out's own memory where out's bytes are what the sum reads and
// only out holds them (a repair then recomputes out's value), and add_ moves the result into
// out's TensorImpl. A plain block's convolution likewise sums over its identity's bytes where
// they lie, when the identity is the block before it's result, handed over, held only by the
// program's tensor, and its value can be computed again: each block's output carries that
// recomputation (its convolution again, plus the identity's own recomputed value), back to
// the last block whose identity was not summed over. A max_pool2d after a
// fused chain pools the handed-over bytes as they are and hands its result on. A
// squeeze-excitation block's pool and `x * gate` read its depthwise chain's handed-over bytes
// as they are, and the product goes on in oneDNN's layout to the next convolution.
// `relu(proj(x) + f(x))` (regnet), out of place with the projection run first, is f's last
// convolution adding the projection's result, which its own convolution kept in oneDNN's
// layout. A torch.cat of chains' results (squeezenet's fire modules, inception's branches)
// joins the chains' bytes as they are, each chain having kept its result for the op that
// reads the joined tensor; a join may also take a max pool's handed-over result (inception's
// reduction blocks: rescaled into the chains' INT8 scale) and inner joins' results (its last
// blocks, whose inner chains learn from the outer join's reader). An average pool of
// handed-over bytes hands its fp32 result on, in the blocked layout oneDNN pooled it in, to
// the convolution that reads it (inception's pool branches). This holds in every mode that
// runs the shim's kernels; INT8 mode adds that handed-over bytes are INT8, written in the
// next op's input scale (a downsample's or projection's addend in its own calibrated scale).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "kernels/convolution.h"
#include "kernels/matmul.h"
#include "kernels/onednn_context.h"
#include "shim/dispatch_key.h"

namespace ipex_shim::fusion {

// Registers the observer; false (and why) when the key is taken, and fusion then stays off.
bool install(std::string* why);
bool enabled();

// The activation after a convolution or linear: relu/relu_, or (convolutions only) a
// hardtanh/hardtanh_ clamping to [0, upper] (relu6 is hardtanh(0, 6)), silu/silu_ or
// hardswish/hardswish_ (EfficientNet's and MobileNetV3's; their results may be negative).
enum class Relu {
  none,
  in_place,
  out_of_place,
  clamp_in_place,
  clamp_out_of_place,
  silu_in_place,
  silu_out_of_place,
  hardswish_in_place,
  hardswish_out_of_place,
};
constexpr bool is_clamp(Relu kind) {
  return kind == Relu::clamp_in_place || kind == Relu::clamp_out_of_place;
}
constexpr bool is_in_place(Relu kind) {
  return kind == Relu::in_place || kind == Relu::clamp_in_place ||
         kind == Relu::silu_in_place || kind == Relu::hardswish_in_place;
}
// relu or relu_ itself (the one activation a linear fuses as relu).
constexpr bool is_plain_relu(Relu kind) {
  return kind == Relu::in_place || kind == Relu::out_of_place;
}
// The convolution post-ops computing `kind` (none: nothing to fuse).
inline void set_activation(ConvolutionPostOps* post_ops, Relu kind, float upper) {
  using Activation = ConvolutionPostOps::Activation;
  post_ops->relu = is_plain_relu(kind) || is_clamp(kind);
  post_ops->relu_upper = is_clamp(kind) ? upper : 0.f;
  post_ops->activation = kind == Relu::silu_in_place || kind == Relu::silu_out_of_place
                             ? Activation::silu
                         : kind == Relu::hardswish_in_place || kind == Relu::hardswish_out_of_place
                             ? Activation::hardswish
                             : Activation::none;
}

struct ConvolutionPlan {
  bool fuse = false;
  bool fold_batch_norm = false;
  BatchNormFold batch_norm;
  Relu relu = Relu::none;
  float relu_upper = 0.f;    // a clamp's upper bound (is_clamp(relu))
  bool keep_layout = false;  // the chain's result goes to a conv2d: keep oneDNN's layout
  at::Tensor next_weight;    // that conv2d's weight, when it is alive (INT8 asks its scale)
  // The result goes to this max pool op (INT8: its op, shim/int8_identity.h; else 0).
  int64_t next_pool = -1;
  // The result is a downsample's fused addend, kept in oneDNN's layout (INT8: as s8 with the
  // output scale of this op; else any value >= 0).
  int64_t keep_for_op = -1;
  // `out = bn(conv(x)); out += identity; relu_(out)` with the identity available now (the
  // input of an earlier convolution, as learned): added inside the convolution.
  at::Tensor sum;
  // That identity is the earlier chain's result that the predicted add_ replaces (a
  // downsample's add): nothing reads its bytes after this convolution, which may sum over them.
  bool sum_in_place = false;
  at::Tensor weight;  // the site: a convolution is known by its weight tensor
};

// The convolution wrapper, no-gradient path, before computing.
ConvolutionPlan plan_convolution(const at::Tensor& weight);

// Computes the convolution with the given post-ops into a new tensor (for repairs).
using Recompute = std::function<at::Tensor(const ConvolutionPostOps&)>;

// The convolution wrapper, after computing `output` from `input` as `plan` said;
// `kept_layout`: the layout of the output's bytes when the kernel kept oneDNN's layout.
// `kept_scale`: the INT8 scale of the kept bytes (1 when they are floating point).
void after_convolution(const at::Tensor& input, const at::Tensor& output,
                       const ConvolutionPlan& plan, Recompute recompute,
                       const dnnl::memory::desc* kept_layout, float kept_scale = 1.f);

// The convolution of `plan` failed part way: where it was to sum over its addend's bytes
// (plan.sum_in_place), they may hold anything now, and the addend's value is recomputed.
void sum_in_place_failed(const ConvolutionPlan& plan);

// The handoff between convolutions. layout_of: the oneDNN layout `input`'s bytes are in
// when it was handed over for convolutions, else nullptr. consumed: a convolution read it
// (counted; further conv2d calls may read it as it is, any other op gets it repaired).
// settle: repair it now (before stock reads it).
const dnnl::memory::desc* layout_of(const at::Tensor& input);
float layout_scale(const at::Tensor& input);  // INT8 bytes' scale; 1 otherwise
void consumed(const at::Tensor& input);
void settle(const at::Tensor& input);

// batch_norm wrapper: the answer when this call is the predicted one; else nullopt (the
// wrapper runs stock and then calls after_batch_norm to learn).
c10::optional<at::Tensor> answer_batch_norm(const at::Tensor& input,
                                            const c10::optional<at::Tensor>& weight,
                                            const c10::optional<at::Tensor>& bias,
                                            const c10::optional<at::Tensor>& mean,
                                            const c10::optional<at::Tensor>& var, bool training,
                                            double eps);
void after_batch_norm(const at::Tensor& input, const at::Tensor& output,
                      const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                      const c10::optional<at::Tensor>& mean, const c10::optional<at::Tensor>& var,
                      bool training, double eps);

struct LinearPlan {
  bool fuse = false;
  MatmulActivation activation = MatmulActivation::none;
  Relu relu = Relu::none;  // which relu op the activation stands for, when it is a relu
  at::Tensor weight;
  // The result (after the activation, if any) goes straight to the linear of
  // `next_weight` (a feed-forward block's second layer): keep it as that linear reads it.
  bool keep = false;
  at::Tensor next_weight;
};

// The linear wrapper, no-gradient path, before and after computing. `kept_layout`: the
// layout of the result's bytes when the kernel kept them for the next linear (INT8 with
// `kept_scale`, or BF16), else nullptr.
LinearPlan plan_linear(const at::Tensor& weight);
using RecomputeLinear = std::function<at::Tensor()>;  // the plain linear, for repairs
void after_linear(const at::Tensor& input, const at::Tensor& output, const LinearPlan& plan,
                  RecomputeLinear recompute, const dnnl::memory::desc* kept_layout = nullptr,
                  float kept_scale = 1.f);

// The linear of `weight` is about to read `input`. When input is the untouched end of
// another linear's chain (its result, or its activation's), that linear learns to hand its
// result to this one. Returns the layout of input's bytes when they were handed over for a
// linear (`*scale`: their INT8 scale, 1 for BF16), else nullptr; the caller reads them as
// they are (then calls consumed) or settles them.
const dnnl::memory::desc* linear_reads(const at::Tensor& input, const at::Tensor& weight,
                                       float* scale);

c10::optional<at::Tensor> answer_gelu(const at::Tensor& input, c10::string_view approximate);
void after_gelu(const at::Tensor& input, const at::Tensor& output, c10::string_view approximate,
                uint32_t version_before);

// add_ wrapper: `self += other` answered by a convolution that already added
// `other`; else nullopt, and after_add learns (version_before: self's before the add).
bool answer_add(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha);
// `self_producer`: in INT8 mode the op whose result self is (its calibrated scale lets the
// earlier chain keep self in INT8 for a downsample's fused add), or -1; else 0.
void after_add(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha,
               uint32_t version_before, int64_t self_producer = -1);

// add (out of place): `identity + bn(conv(...))` in either order, the identity being the
// block's input or an earlier chain's batch-norm result (`proj(x) + f(x)`), answered with the
// fused sum when it is the predicted add (else nullopt; after_add_out_of_place learns, given
// the operands' versions before the add, its result, and in INT8 mode the ops that made
// the operands, as after_add's self_producer).
c10::optional<at::Tensor> answer_add_out_of_place(const at::Tensor& self,
                                                  const at::Tensor& other,
                                                  const at::Scalar& alpha);
void after_add_out_of_place(const at::Tensor& self, const at::Tensor& other,
                            const at::Scalar& alpha, const at::Tensor& result,
                            uint32_t self_version, uint32_t other_version,
                            int64_t self_producer = -1, int64_t other_producer = -1);

// Pooling. after_pool learns that the chain ending in `input` feeds the pooling op `pool_op`
// (INT8: its op, kNoOp where INT8 does not know the pool; else 0), so later passes hand it
// over; `output` is the pool's result (a pool INT8 does not know passes a torch.cat's
// learning on to the op that reads it). handed_on taints a pooled
// result whose bytes are in `layout` (scale `scale`) for the convolutions that read it next.
void after_pool(const at::Tensor& input, const at::Tensor& output, int64_t pool_op);
void handed_on(const at::Tensor& input, const at::Tensor& output,
               const dnnl::memory::desc& layout, float scale);

// torch.cat along channels of convolution chains' results. after_cat learns, on a pass that
// runs it stock, that every input is a chain's result; the op that then reads the joined
// tensor (a conv2d or a pool) teaches each chain to keep its result in oneDNN's layout for
// it (INT8: in that op's input scale). On later passes the cat wrapper joins the handed-over
// bytes as they are and hands the result on (handed_on); an input it cannot join (its other
// inputs are values, or of another type or scale) goes to not_read_as_is (below): its chain
// keeps fusing but stops handing its result over.
// An input may also be another learning cat's result (inception's nested cats: its chains
// learn from this cat's reader) or bytes already handed over (a max pool's result), which
// the join rescales into the others' INT8 scale. cat_learning: whether a cat that cannot
// join yet is on such a learning pass (its other inputs are chains that may still learn),
// so the handed-over inputs are read as values once (settle) and keep their handoff;
// `handed_over` says which inputs were handed over when the cat was called.
void after_cat(const std::vector<at::Tensor>& inputs, int64_t dim, const at::Tensor& output,
               const std::vector<bool>& handed_over);
bool cat_learning(const std::vector<at::Tensor>& inputs);

// Squeeze-excitation's `x * gate` with x handed over in oneDNN's layout: the mul wrapper
// multiplies x's bytes as they are (kernels/channel_scale.h) and hands the product to the
// convolution that reads it next (the block's projection).
// weight_after_mul: the weight of the convolution learned to read such a product of x's
// chain (INT8 writes the product in its input scale), or an undefined tensor.
// mul_handed_on: `output` (input * gate) has its bytes in `layout` (INT8: with `scale`); it
// is tainted like a chain's result handed over, and the convolution that reads it is learned.
// not_read_as_is: an op that cannot read input's bytes as they are is about to read it: the
// bytes are reordered into its values, and its chain hands its result over no more (the
// prediction failed).
at::Tensor weight_after_mul(const at::Tensor& input);
// What the observer does for a tensor an op reads (for kernels registered at the observer's
// key, which replace its fallback): handed-over bytes are left to the kernel when `op` may
// read them as they are; any other read of a tainted tensor repairs it (and of what a
// tainted tensor is computed from, that tensor first).
void observe_read(const at::Tensor& tensor, const std::string& op);
void mul_handed_on(const at::Tensor& input, const at::Tensor& output,
                   const dnnl::memory::desc& layout, float scale);
void not_read_as_is(const at::Tensor& input);

// The bytes of a tensor added by a convolution: their layout when handed over in oneDNN's
// layout (with their INT8 scale), else nullptr (then they are the tensor's values).
const dnnl::memory::desc* addend_layout(const at::Tensor& tensor, float* scale);

// `upper`: a clamp's upper bound (0 for relu).
c10::optional<at::Tensor> answer_relu(const at::Tensor& input, Relu kind, float upper = 0.f);
// `version_before`: the input's version counter before the relu ran.
void after_relu(const at::Tensor& input, const at::Tensor& output, Relu kind,
                uint32_t version_before, float upper = 0.f);

struct Stats {
  uint64_t fused_convolutions = 0;
  uint64_t fused_linears = 0;
  uint64_t handoffs = 0;  // convolution inputs read in oneDNN's layout, no reorder
  uint64_t sums_in_place = 0;  // residual adds summed over the addend's own memory
  uint64_t mispredictions = 0;
  uint64_t repairs = 0;
  size_t sites = 0;
  size_t sites_off = 0;
};
Stats stats();

}  // namespace ipex_shim::fusion
