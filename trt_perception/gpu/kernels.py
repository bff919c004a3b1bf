"""CUDA C sources of the GPU path and their compilation (cached per type configuration).

Every kernel is a plain loop body over one output element; the coordinate tables come from
``resize_tables`` so that the index math is the CPU-tested one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from trt_perception.gpu._cupy import require_cupy

# Threads per block of the 2-D (one thread per pixel) kernels.
BLOCK_2D = (32, 8)


def grid_2d(height: int, width: int) -> tuple[int, int]:
    """Blocks covering a ``height x width`` image with ``BLOCK_2D`` threads each."""
    return ((width + BLOCK_2D[0] - 1) // BLOCK_2D[0], (height + BLOCK_2D[1] - 1) // BLOCK_2D[1])


# C types the kernels are specialized for, keyed by numpy dtype name.
C_TYPES = {"float32": "float", "float16": "unsigned short", "uint8": "unsigned char", "uint16": "unsigned short"}

_COMMON = r"""
__device__ __forceinline__ void store_value(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_value(unsigned char* p, float v) { *p = (unsigned char)rintf(v); }
__device__ __forceinline__ void store_half(unsigned short* p, float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); *p = h;
}
__device__ __forceinline__ float load_half(const unsigned short* p) {
    float f; unsigned short h = *p; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
#if OUT_IS_HALF
#define STORE(p, v) store_half((p), (v))
#else
#define STORE(p, v) store_value((p), (v))
#endif
#if SCORE_IS_HALF
#define LOAD(p) load_half(p)
#else
#define LOAD(p) ((float)*(p))
#endif
"""

_PREPROCESS = r"""
#if CHANNELS_LAST
#define NET_INDEX(k, y, x) (((long long)(y) * net_w + (x)) * 3 + (k))
#else
#define NET_INDEX(k, y, x) (((long long)(k) * net_h + (y)) * net_w + (x))
#endif

__device__ __forceinline__ float load_out(const OUT_T* p) {
#if OUT_IS_HALF
    return load_half(p);
#else
    return (float)*p;
#endif
}

// One thread per network pixel: sample the raw uint8 image (rows `step` bytes apart, `src_channels`
// interleaved channels), pick the model's channel order, normalize (v * scale + shift) and store
// in NCHW or NHWC. Pixels outside the content window get the (already normalized) pad value.
extern "C" __global__ void preprocess(
    const unsigned char* __restrict__ src, long long step, int src_channels,
    int ch0, int ch1, int ch2,
    const int* __restrict__ x0, const int* __restrict__ x1,
    const int* __restrict__ a0, const int* __restrict__ a1,
    const int* __restrict__ y0, const int* __restrict__ y1,
    const int* __restrict__ b0, const int* __restrict__ b1,
    int net_h, int net_w, int top, int left, int content_h, int content_w,
    float sc0, float sc1, float sc2, float sh0, float sh1, float sh2,
    float pad0, float pad1, float pad2,
    OUT_T* __restrict__ out)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= net_w || y >= net_h) return;
    const int cy = y - top, cx = x - left;
    float v[3] = {pad0, pad1, pad2};
    if (cy >= 0 && cy < content_h && cx >= 0 && cx < content_w) {
        const int channel[3] = {ch0, ch1, ch2};
        const float scale[3] = {sc0, sc1, sc2};
        const float shift[3] = {sh0, sh1, sh2};
        const unsigned char* row0 = src + (long long)y0[cy] * step;
        const int col0 = x0[cx] * src_channels;
#if NEAREST
#pragma unroll
        for (int k = 0; k < 3; ++k) v[k] = __fadd_rn(__fmul_rn((float)row0[col0 + channel[k]], scale[k]), shift[k]);
#else
        const unsigned char* row1 = src + (long long)y1[cy] * step;
        const int col1 = x1[cx] * src_channels;
        const int wa0 = a0[cx], wa1 = a1[cx], wb0 = b0[cy], wb1 = b1[cy];
#pragma unroll
        for (int k = 0; k < 3; ++k) {
            const int s = channel[k];
            // OpenCV's uint8 INTER_LINEAR: 11-bit fixed-point taps, SIMD rounding of the vertical pass.
            const int h0 = row0[col0 + s] * wa0 + row0[col1 + s] * wa1;
            const int h1 = row1[col0 + s] * wa0 + row1[col1 + s] * wa1;
            int value = (((h0 >> 4) * wb0) >> 16) + (((h1 >> 4) * wb1) >> 16);
            value = min(max((value + 2) >> 2, 0), 255);
            v[k] = __fadd_rn(__fmul_rn((float)value, scale[k]), shift[k]);  // as numpy: one rounding each
        }
#endif
    }
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        STORE(out + NET_INDEX(k, y, x), v[k]);
    }
}

// Sum and sum of squares (in double) of the content window of the network input, for
// per-image standardization; acc must hold two zeroed doubles.
extern "C" __global__ void content_sums(
    const OUT_T* __restrict__ out, int net_h, int net_w, int top, int left, int content_h, int content_w,
    double* acc)
{
    __shared__ double partial[2][32];
    double s = 0.0, q = 0.0;
    const long long n = (long long)content_h * content_w * 3;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long pixel = i / 3;
        const int k = (int)(i - pixel * 3);
        const int y = top + (int)(pixel / content_w), x = left + (int)(pixel % content_w);
        const double v = load_out(out + NET_INDEX(k, y, x));
        s += v; q += v * v;
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        s += __shfl_down_sync(0xffffffff, s, offset);
        q += __shfl_down_sync(0xffffffff, q, offset);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { partial[0][warp] = s; partial[1][warp] = q; }
    __syncthreads();
    if (threadIdx.x == 0) {
        double bs = 0.0, bq = 0.0;
        for (int w = 0; w < (blockDim.x + 31) / 32; ++w) { bs += partial[0][w]; bq += partial[1][w]; }
        atomicAdd(acc, bs); atomicAdd(acc + 1, bq);
    }
}

// In place over the whole input (padding too): v * (1 / s) - mean / s with s = max(stddev, 1/sqrt(n))
// as tf.image.per_image_standardization, n being the number of content values.
extern "C" __global__ void standardize(OUT_T* __restrict__ out, long long total, long long n, const double* __restrict__ acc)
{
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= total) return;
    const double mean = acc[0] / n;
    const double variance = fmax(acc[1] / n - mean * mean, 0.0);
    const double adjusted = fmax(sqrt(variance), 1.0 / sqrt((double)n));
    const float scale = __fdiv_rn(1.0f, (float)adjusted);
    const float offset = (float)(-mean / adjusted);
    STORE(out + i, __fadd_rn(__fmul_rn(load_out(out + i), scale), offset));
}
"""

_POSTPROCESS = r"""
// Sets *flag when any of the n scores is NaN or infinite.
extern "C" __global__ void flag_nonfinite(const SCORE_T* __restrict__ scores, long long n, int* flag)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        if (!isfinite(LOAD(scores + i))) { atomicOr(flag, 1); return; }
    }
}

// Label of map pixel p of a [C,H,W] or [H,W,C] score map: index of the first maximum, or for one
// channel (binary maps) value > threshold. Sets *flag (when not null) if a score is NaN or infinite.
__device__ __forceinline__ LABEL_T map_label(
    const SCORE_T* __restrict__ scores, int channels, long long plane, int channels_last, long long p,
    float threshold, int* flag)
{
    const long long stride = channels_last ? 1 : plane;
    const SCORE_T* s = scores + (channels_last ? p * channels : p);
    float best = LOAD(s);
    bool finite = isfinite(best);
    int best_index = 0;
    for (int c = 1; c < channels; ++c) {
        const float v = LOAD(s + c * stride);
        finite = finite && isfinite(v);
        if (v > best) { best = v; best_index = c; }
    }
    if (!finite && flag != nullptr) atomicOr(flag, 1);
    if (channels == 1) return best > threshold ? 1 : 0;
    return (LABEL_T)best_index;
}

// Labels of a whole score map (map_label per pixel); flag as there.
extern "C" __global__ void decide_labels(
    const SCORE_T* __restrict__ scores, int channels, int height, int width, int channels_last,
    float threshold, LABEL_T* __restrict__ labels, int* flag)
{
    const long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long plane = (long long)height * width;
    if (p >= plane) return;
    labels[p] = map_label(scores, channels, plane, channels_last, p, threshold, flag);
}

__device__ __forceinline__ float bilinear(const SCORE_T* s, long long o00, long long o01, long long o10, long long o11,
                                          float a0, float a1, float b0, float b1)
{
    // OpenCV's float INTER_LINEAR: horizontal pass then vertical, no fused multiply-add.
    const float h0 = __fadd_rn(__fmul_rn(LOAD(s + o00), a0), __fmul_rn(LOAD(s + o01), a1));
    const float h1 = __fadd_rn(__fmul_rn(LOAD(s + o10), a0), __fmul_rn(LOAD(s + o11), a1));
    return __fadd_rn(__fmul_rn(h0, b0), __fmul_rn(h1, b1));
}

// One channel's upsampled score: the bilinear blend, or for a map exactly twice the output's size
// (``area``: OpenCV's area shortcut) the four source values summed, in sequence where ``in_sequence``
// and else in pairs, times 0.25 (the pairs' sum equals the blend except where halving a score makes
// it subnormal or a sum overflows).
__device__ __forceinline__ float upsampled_score(const SCORE_T* s, long long o00, long long o01, long long o10, long long o11,
                                                 float a0, float a1, float b0, float b1, bool area, bool in_sequence)
{
    if (!area) return bilinear(s, o00, o01, o10, o11, a0, a1, b0, b1);
    const float s00 = LOAD(s + o00), s01 = LOAD(s + o01), s10 = LOAD(s + o10), s11 = LOAD(s + o11);
    const float sum = in_sequence ? __fadd_rn(__fadd_rn(__fadd_rn(s00, s01), s10), s11)
                                  : __fadd_rn(__fadd_rn(s00, s01), __fadd_rn(s10, s11));
    return __fmul_rn(sum, 0.25f);
}

// Label of output pixel (x, y) from the bilinearly upsampled score map window at (row0, col0): the
// same decision as decide_labels, on scores that never reach memory. area_sequence (null unless the
// window is exactly twice the output's size): per channel and output column (row c, out_w columns),
// 1 where OpenCV's area shortcut sums in sequence (resize_tables.area_shortcut_sums_in_sequence).
__device__ __forceinline__ LABEL_T upsampled_label(
    const SCORE_T* __restrict__ scores, int channels, int height, int width, int channels_last,
    int row0, int col0, int x, int y,
    const int* __restrict__ x0, const int* __restrict__ x1, const float* __restrict__ a0, const float* __restrict__ a1,
    const int* __restrict__ y0, const int* __restrict__ y1, const float* __restrict__ b0, const float* __restrict__ b1,
    const unsigned char* __restrict__ area_sequence, int out_w, float threshold)
{
    const long long plane = (long long)height * width;
    const long long cstride = channels_last ? 1 : plane;
    const long long pix = channels_last ? channels : 1;
    const long long r0 = (long long)(row0 + y0[y]) * width, r1 = (long long)(row0 + y1[y]) * width;
    const long long c0 = col0 + x0[x], c1 = col0 + x1[x];
    const long long o00 = (r0 + c0) * pix, o01 = (r0 + c1) * pix, o10 = (r1 + c0) * pix, o11 = (r1 + c1) * pix;
    const float wa0 = a0[x], wa1 = a1[x], wb0 = b0[y], wb1 = b1[y];
    const bool area = area_sequence != nullptr;
    const unsigned char* sequence = area ? area_sequence + x : nullptr;  // row c: sequence[c * out_w]
    const float first = upsampled_score(scores, o00, o01, o10, o11, wa0, wa1, wb0, wb1, area, area && sequence[0] != 0);
    if (channels == 1) return first > threshold ? 1 : 0;
    float best = first;
    int best_index = 0;
    for (int c = 1; c < channels; ++c) {
        const float v = upsampled_score(scores + c * cstride, o00, o01, o10, o11, wa0, wa1, wb0, wb1, area,
                                        area && sequence[(long long)c * out_w] != 0);
        if (v > best) { best = v; best_index = c; }
    }
    return (LABEL_T)best_index;
}

// Nearest-neighbour resample of a label map window (origin row0, col0) through index tables.
extern "C" __global__ void gather_labels(
    const LABEL_T* __restrict__ labels, int width, int row0, int col0,
    const int* __restrict__ rows, const int* __restrict__ cols, int out_h, int out_w, LABEL_T* __restrict__ out)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    out[(long long)y * out_w + x] = labels[(long long)(row0 + rows[y]) * width + col0 + cols[x]];
}

// Colour of one label, and its blend onto one source pixel as cv2.addWeighted(image, keep, colours,
// mix, 0) rounds it; the pixel's R, G and B sit at channel[0..2].
__device__ __forceinline__ void blend_pixel(
    const unsigned char* __restrict__ colour, const unsigned char* __restrict__ pixel, const int* channel,
    float keep, float mix, unsigned char* __restrict__ o)
{
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        const float v = rintf(__fmaf_rn((float)pixel[channel[k]], keep, __fmul_rn((float)colour[k], mix)));
        o[k] = (unsigned char)fminf(fmaxf(v, 0.0f), 255.0f);
    }
}

// Palette colours of the labels (RGB), optionally alpha-blended onto the source image; the image
// is read as received (rows `step` bytes apart), channel r/g/b giving where R, G and B sit in a pixel.
extern "C" __global__ void colorize_overlay(
    const LABEL_T* __restrict__ labels, int height, int width, const unsigned char* __restrict__ palette,
    const unsigned char* __restrict__ image, long long step, int image_channels, int r, int g, int b,
    float keep, float mix, int blend, unsigned char* __restrict__ out)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    const long long p = (long long)y * width + x;
    const unsigned char* colour = palette + 3 * (long long)labels[p];
    unsigned char* o = out + 3 * p;
    if (!blend) { o[0] = colour[0]; o[1] = colour[1]; o[2] = colour[2]; return; }
    const int channel[3] = {r, g, b};
    blend_pixel(colour, image + (long long)y * step + (long long)x * image_channels, channel, keep, mix, o);
}

// Everything a segmentation frame publishes, in one pass over the output pixels: the label (the
// bilinearly upsampled scores decided when UPSAMPLE, else the label of the map pixel the nearest
// tables x0/y0 pick in the window at row0, col0: read from label_map, or decided here from the
// scores when label_map is null), and when colours / overlay are non-null its palette
// colour and its blend onto the source image. Labels, colours and overlay are separate regions of
// one buffer, downloaded with a single copy.
extern "C" __global__ void decode_publish(
    const SCORE_T* __restrict__ scores, const LABEL_T* __restrict__ label_map, int channels, int height, int width,
    int channels_last, int row0, int col0,
    const int* __restrict__ x0, const int* __restrict__ x1, const float* __restrict__ a0, const float* __restrict__ a1,
    const int* __restrict__ y0, const int* __restrict__ y1, const float* __restrict__ b0, const float* __restrict__ b1,
    const unsigned char* __restrict__ area_sequence,
    int out_h, int out_w, float threshold, const unsigned char* __restrict__ palette,
    const unsigned char* __restrict__ image, long long step, int image_channels, int r, int g, int b,
    float keep, float mix,
    LABEL_T* __restrict__ labels, unsigned char* __restrict__ colours, unsigned char* __restrict__ overlay)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
#if UPSAMPLE
    const LABEL_T label = upsampled_label(
        scores, channels, height, width, channels_last, row0, col0, x, y, x0, x1, a0, a1, y0, y1, b0, b1,
        area_sequence, out_w, threshold);
#else
    const long long q = (long long)(row0 + y0[y]) * width + col0 + x0[x];
    const LABEL_T label = label_map != nullptr
        ? label_map[q] : map_label(scores, channels, (long long)height * width, channels_last, q, threshold, nullptr);
#endif
    const long long p = (long long)y * out_w + x;
    labels[p] = label;
    const unsigned char* colour = palette + 3 * (long long)label;
    if (colours != nullptr) { unsigned char* o = colours + 3 * p; o[0] = colour[0]; o[1] = colour[1]; o[2] = colour[2]; }
    if (overlay != nullptr) {
        const int channel[3] = {r, g, b};
        blend_pixel(colour, image + (long long)y * step + (long long)x * image_channels, channel, keep, mix, overlay + 3 * p);
    }
}

// Greedy NMS over boxes (xyxy, double) already sorted by descending score, in one block: box i, if
// not suppressed, is kept and suppresses every later box of the same class (any class when
// agnostic) whose IoU with it exceeds the threshold. Writes the kept positions in order to kept[]
// and their number to *kept_count; stops after max_keep. suppressed[] must start as zeros.
extern "C" __global__ void nms_sorted(
    const double* __restrict__ boxes, const long long* __restrict__ classes, int n, double iou_threshold,
    int class_agnostic, int max_keep, unsigned char* suppressed, int* kept, int* kept_count)
{
    int count = 0;  // identical in every thread: all read the same suppressed[i] after a barrier
    for (int i = 0; i < n && count < max_keep; ++i) {
        __syncthreads();
        if (suppressed[i]) continue;
        if (threadIdx.x == 0) kept[count] = i;
        ++count;
        const double x1 = boxes[4 * i], y1 = boxes[4 * i + 1], x2 = boxes[4 * i + 2], y2 = boxes[4 * i + 3];
        const double area = fmax(x2 - x1, 0.0) * fmax(y2 - y1, 0.0);
        for (int j = i + 1 + threadIdx.x; j < n; j += blockDim.x) {
            if (suppressed[j] || (!class_agnostic && classes[j] != classes[i])) continue;
            const double* o = boxes + 4 * j;
            const double w = fmax(fmin(x2, o[2]) - fmax(x1, o[0]), 0.0);
            const double h = fmax(fmin(y2, o[3]) - fmax(y1, o[1]), 0.0);
            const double inter = w * h;
            const double uni = area + fmax(o[2] - o[0], 0.0) * fmax(o[3] - o[1], 0.0) - inter;
            if ((uni > 0.0 ? inter / uni : 0.0) > iou_threshold) suppressed[j] = 1;
        }
    }
    if (threadIdx.x == 0) *kept_count = count;
}
"""


@lru_cache(maxsize=None)
def preprocess_module(out_dtype: str, channels_last: bool, nearest: bool) -> Any:
    """Compiled preprocessing kernels for one output dtype / layout / interpolation."""
    cupy = require_cupy()
    options = (
        f"-DOUT_T={C_TYPES[out_dtype]}",
        f"-DOUT_IS_HALF={int(out_dtype == 'float16')}",
        "-DSCORE_IS_HALF=0",
        f"-DCHANNELS_LAST={int(channels_last)}",
        f"-DNEAREST={int(nearest)}",
    )
    return cupy.RawModule(code=_COMMON + _PREPROCESS, options=options)


@lru_cache(maxsize=None)
def postprocess_module(score_dtype: str, label_dtype: str, upsample: bool = False) -> Any:
    """Compiled label kernels for one score dtype (float32/float16) and label dtype (uint8/uint16);
    ``upsample`` picks how ``decode_publish`` gets its labels (bilinear scores, else a label map)."""
    cupy = require_cupy()
    options = (
        f"-DUPSAMPLE={int(upsample)}",
        f"-DSCORE_T={C_TYPES[score_dtype]}",
        f"-DSCORE_IS_HALF={int(score_dtype == 'float16')}",
        f"-DLABEL_T={C_TYPES[label_dtype]}",
        "-DOUT_IS_HALF=0",
        "-DOUT_T=float",
    )
    return cupy.RawModule(code=_COMMON + _POSTPROCESS, options=options)
