// Concatenation of bytes handed over in oneDNN's layout: torch.cat of convolution chains'
// results (squeezenet's fire modules, inception's branches) joined as they are, INT8, BF16
// or fp32, so the next convolution or pool reads the joined bytes without a reorder into
// the program's layout and back.
#pragma once

#include <ATen/core/Tensor.h>

#include <dnnl.hpp>
#include <vector>

namespace ipex_shim {

// Joins `inputs` (4-D, whose bytes are in `layouts`, all of one data type) along the
// channel axis into a new tensor of the program's sizes, dtype and `format` (what stock's
// cat gives) whose bytes are the result in `*output_layout`. Throws when oneDNN cannot join
// these layouts or the result would not fit the tensor's bytes.
// INT8 bytes: `scales` (one per input, or empty when all share one) are the inputs' scales;
// an input in another scale than `joined_scale` is rescaled into it (same layout and type)
// before the join, so the result's bytes are all in `joined_scale`.
at::Tensor concat_handed_over(const std::vector<at::Tensor>& inputs,
                              const std::vector<dnnl::memory::desc>& layouts,
                              at::MemoryFormat format, dnnl::memory::desc* output_layout,
                              const std::vector<float>& scales = {}, float joined_scale = 1.f);

}  // namespace ipex_shim
