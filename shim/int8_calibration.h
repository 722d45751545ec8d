// IPEX_MODE=calibration: the program runs on stock PyTorch (fp32, results identical to a
// run without the shim) while every quantisable op's inputs and outputs are observed, and
// at exit the INT8 config is written to IPEX_CONFIG (config/int8_config.h).
//
// Ranges: min_max keeps the smallest and largest value seen; percentile clips each call's
// range at the 99.99th percentile of |x| on a sample of up to 64K of its values, keeping the
// widest clipped range; mse (the default) clips the widest range seen where quantising a
// uniform sample of all calls' values (64K, pooled over the calls) to the 255 or 127 steps
// the range will get gives the smallest squared error, chosen when the config is made. A
// tensor never seen negative is quantised to u8 (scale 255 / max), others to s8
// (scale 127 / max|x|). Ranks under torchrun clip on their own; the merge keeps the widest.
//
// Sensitivity: the first input of each convolution and linear is kept (its first two
// samples, or 256 rows); at exit the op runs on it in INT8 with the final scales and its
// output is compared with fp32's. The ratio of signal to error power, in dB, is written as
// `sqnr_db`; an op below IPEX_INT8_MIN_SQNR is written `quantized: false`.
//
// Writing: only the process that started calibration writes (not DataLoader workers or other
// forked children), atomically. Under torchrun (WORLD_SIZE > 1) each rank leaves its
// observations beside the config and the last rank to finish merges them into one config.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "config/int8_config.h"
#include "kernels/convolution.h"
#include "shim/int8_identity.h"
#include "shim/settings.h"

namespace ipex_shim::calibration {

// At start: checks that IPEX_CONFIG is set and writable (false + why if not: nothing would
// be written, so calibration does not start), then arranges the write at exit.
// In a Python process the write is also registered with Python's atexit, so that it runs
// before the interpreter and torch's Python side are torn down (a C atexit handler runs
// after that, and oneDNN crashed there); the C handler remains for C++ programs.
bool start(const Settings& settings, std::string* why);
bool active();

// At run time (torch.ops.ipex_shim.set_mode/enter_mode): observing starts, with nothing
// written at exit; save_to() writes what was observed. A no-op when already observing.
void start_observing(const Settings& settings);

// Writes the config of what was observed so far to `path`, atomically (a previous file at
// the path is replaced whole or left as it was). Returns false with *said = why.
bool save_to(const std::string& path, std::string* said);

// Forgets every observation (a new calibration, from the Python API's AmpConf).
void reset_observations();

// Writes the config now (once per process; later calls and the exit handlers do nothing) and
// says what happened. torch.ops.ipex_shim.write_config() calls it.
std::string write_now();

// The same from Python's exit handler (torch.ops.ipex_shim.write_config_at_exit()): returns 2
// when the config was not written and IPEX_STRICT=1 (the exit code the handler then exits
// with), else 0.
int64_t write_at_exit_now();

// The wrappers' reports: the inputs before the stock op runs (an in-place op changes
// them), its result after; each call of observe_output counts one call of the op.
void observe_inputs(int64_t op, const std::vector<const at::Tensor*>& inputs);
void observe_output(int64_t op, const at::Tensor& output);
// (`transposed` with its `output_padding` for a transposed convolution.)
void keep_convolution_sample(int64_t op, const at::Tensor& input, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation,
                             int64_t groups, bool transposed = false,
                             c10::IntArrayRef output_padding = {});
void keep_linear_sample(int64_t op, const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias);

// The config as it would be written now (sensitivity evaluated on the kept samples).
Int8Config current_config();

// Merges configs of the same program's ranks: ranges widened, calls added, the worst SQNR
// kept, scales recomputed; entries are matched by key.
Int8Config merge_configs(const std::vector<Int8Config>& parts, double min_sqnr_db);

// The scale for a range: 255 / max for a range that is never negative, else 127 / max|x|;
// 1 when the range is all zeros.
double scale_for(double min, double max, bool* uint8);

}  // namespace ipex_shim::calibration
