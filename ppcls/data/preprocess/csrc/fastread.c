/* The training reader's two native steps (ppcls/data/preprocess/native.py loads this with ctypes).
 *
 * ppcls_jpeg_region: decode only the rows and columns of a JPEG that a crop needs, with
 *   libjpeg-turbo's own region decoding: jpeg_crop_scanline (the iMCU columns that hold the
 *   region), jpeg_skip_scanlines (the rows above it, entropy-decoded only) and stopping after the
 *   region's last row. With DCT scaling (scale_denom 1, 2, 4 or 8). The pixels are those of the
 *   whole decode except in the first and last column of the cropped width, where the chroma
 *   upsampling lacks its outer neighbour: the caller asks for one column more on each side.
 *   Errors and libjpeg warnings (corrupt data) return non-zero with libjpeg's message; the caller
 *   then decodes the usual way, which names the problem as before.
 *
 * ppcls_jitter_normalize / ppcls_jitter_chw: ColorJitter's brightness / contrast / saturation,
 *   then NormalizeImage's lookup into a [3, H, W] float32 array, or just the [3, H, W] uint8 planes
 *   (the device normalises), with PIL's arithmetic (float32, no fused multiply-add: built with
 *   -ffp-contract=off): the values of ppcls.data.preprocess.ops.jitter_uint8 followed by
 *   NormalizeImage.to_chw (ToCHWImage), to the bit.
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#if defined(__AVX512VBMI__) && defined(__AVX512BW__)
#include <immintrin.h>
#endif

#define MESSAGE_SIZE 200

struct reader_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *message; /* the caller's buffer, MESSAGE_SIZE bytes */
};

static void on_error(j_common_ptr cinfo) {
    struct reader_error *err = (struct reader_error *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(err->message, MESSAGE_SIZE, "%s", text);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) { /* a warning: damaged data. Counted (num_warnings), the first one kept. */
        struct reader_error *err = (struct reader_error *)cinfo->err;
        if (cinfo->err->num_warnings++ == 0) {
            char text[JMSG_LENGTH_MAX];
            (*cinfo->err->format_message)(cinfo, text);
            snprintf(err->message, MESSAGE_SIZE, "%s", text);
        }
    }
}

/* geometry, in:  [scale_denom, left, top, right, bottom] in the scaled image's pixels
 *           out: [first column decoded, columns decoded, rows decoded, scaled width, scaled height]
 * out receives the rows top..bottom-1 of the decoded columns, RGB, columns*3 bytes a row.
 * Returns 0, or 1 on a libjpeg error or warning, 2 when out is too small, 3 for a colour space
 * other than YCbCr, RGB or grey, 4 for a box outside the image (message says which). */
int ppcls_jpeg_region(const unsigned char *data, unsigned long size, int *geometry, unsigned char *out,
                      long capacity, char *message) {
    struct jpeg_decompress_struct cinfo;
    struct reader_error err;
    volatile int status = 0;
    message[0] = 0;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message = message;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_RGB &&
        cinfo.jpeg_color_space != JCS_GRAYSCALE) {
        snprintf(message, MESSAGE_SIZE, "colour space %d is not YCbCr, RGB or grey", (int)cinfo.jpeg_color_space);
        status = 3;
        goto done;
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)geometry[0];
    jpeg_start_decompress(&cinfo);
    {
        int left = geometry[1], top = geometry[2], right = geometry[3], bottom = geometry[4];
        JDIMENSION x = (JDIMENSION)left, width = (JDIMENSION)(right - left);
        int rows = 0;
        geometry[3] = (int)cinfo.output_width;
        geometry[4] = (int)cinfo.output_height;
        if (left < 0 || top < 0 || right <= left || bottom <= top || right > (int)cinfo.output_width ||
            bottom > (int)cinfo.output_height) {
            snprintf(message, MESSAGE_SIZE, "box %d,%d,%d,%d outside the %ux%u image", left, top, right, bottom,
                     cinfo.output_width, cinfo.output_height);
            status = 4;
            goto done;
        }
        if (x > 0 || width < cinfo.output_width)
            jpeg_crop_scanline(&cinfo, &x, &width);
        geometry[0] = (int)x;
        geometry[1] = (int)width;
        if ((long)width * 3 * (bottom - top) > capacity) {
            snprintf(message, MESSAGE_SIZE, "output buffer of %ld bytes too small", capacity);
            status = 2;
            goto done;
        }
        if (top > 0)
            jpeg_skip_scanlines(&cinfo, (JDIMENSION)top);
        while (rows < bottom - top && cinfo.output_scanline < cinfo.output_height) {
            JSAMPROW row = out + (long)rows * width * 3;
            rows += (int)jpeg_read_scanlines(&cinfo, &row, 1);
        }
        geometry[2] = rows;
        if (err.pub.num_warnings > 0)
            status = 1;
    }
done:
    jpeg_abort_decompress(&cinfo); /* the rows below the box are never decoded */
    jpeg_destroy_decompress(&cinfo);
    return status;
}

/* PIL's Image.blend(constant base, image, factor) for the 256 grey levels, as ops._blend_lut. */
static void blend_table(float base, float factor, unsigned char *table) {
    for (int v = 0; v < 256; v++) {
        float o = ((float)v - base) * factor;
        o = o + base;
        o = o < 0.0f ? 0.0f : o;
        o = o > 255.0f ? 255.0f : o;
        table[v] = (unsigned char)o;
    }
}

/* PIL's convert("L") weights: ITU-R 601-2 in 16-bit fixed point, rounded (+ 0x8000, >> 16). */
#define GREY_R 19595
#define GREY_G 38470
#define GREY_B 7471

/* bytes through a 256-byte table, in place: 64 at a time with AVX-512 VBMI's byte permutes
 * (two 128-byte halves, picked by the top bit), else one at a time */
static void lookup_bytes(unsigned char *restrict bytes, long count, const unsigned char *table) {
    long i = 0;
#if defined(__AVX512VBMI__) && defined(__AVX512BW__)
    const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
    const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
    for (; i + 64 <= count; i += 64) {
        __m512i index = _mm512_loadu_si512(bytes + i);
        __m512i low = _mm512_permutex2var_epi8(t0, index, t1), high = _mm512_permutex2var_epi8(t2, index, t3);
        _mm512_storeu_si512(bytes + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(index), low, high));
    }
#endif
    for (; i < count; i++)
        bytes[i] = table[bytes[i]];
}

/* The planes through the pending table, in place (nothing to do for the identity). */
static void apply_table(unsigned char *restrict planes, long count, unsigned char *table, int *identity) {
    if (*identity)
        return;
    lookup_bytes(planes, count, table);
    for (int v = 0; v < 256; v++) table[v] = (unsigned char)v;
    *identity = 1;
}

enum { OP_BRIGHTNESS = 0, OP_CONTRAST = 1, OP_SATURATION = 2 };

/* ColorJitter's adjustments on the [h, w, 3] uint8 image (left alone), into three planes in
 * scratch (r, g, b: h * w bytes each; then h * w int32 of grey levels) and a table still to apply
 * to them (a last brightness or contrast), as ops.jitter_uint8(..., defer=True). kinds / factors:
 * n_ops adjustments in order. */
static void jitter_planes(const unsigned char *restrict image, long n, int n_ops, const int *kinds,
                          const float *factors, unsigned char *restrict scratch, unsigned char *table) {
    unsigned char *restrict r = scratch, *restrict g = scratch + n, *restrict b = scratch + 2 * n;
    int32_t *restrict grey = (int32_t *)(scratch + 3 * n + (-(3 * n) & 63));
    unsigned char step[256];
    int identity = 1; /* table: a brightness / contrast lookup not applied to the planes yet */
    for (int v = 0; v < 256; v++) table[v] = (unsigned char)v;
    for (long i = 0; i < n; i++) { /* [H, W, 3] -> three planes */
        r[i] = image[3 * i];
        g[i] = image[3 * i + 1];
        b[i] = image[3 * i + 2];
    }
    for (int op = 0; op < n_ops; op++) {
        if (kinds[op] == OP_BRIGHTNESS) { /* a blend with black */
            blend_table(0.0f, factors[op], step);
        } else {
            apply_table(scratch, 3 * n, table, &identity);
            for (long i = 0; i < n; i++)
                grey[i] = ((int32_t)r[i] * GREY_R + (int32_t)g[i] * GREY_G + (int32_t)b[i] * GREY_B + 0x8000) >> 16;
            if (kinds[op] == OP_CONTRAST) { /* a blend with ImageStat's mean of the grey image, rounded */
                int64_t total = 0;
                for (long i = 0; i < n; i++) total += grey[i];
                blend_table((float)(int)((double)total / (double)n + 0.5), factors[op], step);
            } else { /* saturation: a blend with the grey image, in float32 as PIL */
                const float f = factors[op];
                unsigned char *planes[3] = {r, g, b};
                for (int k = 0; k < 3; k++) {
                    unsigned char *restrict p = planes[k];
                    for (long i = 0; i < n; i++) {
                        float y = (float)grey[i];
                        float o = ((float)p[i] - y) * f;
                        o = o + y;
                        o = o < 0.0f ? 0.0f : o;
                        o = o > 255.0f ? 255.0f : o;
                        p[i] = (unsigned char)(int)o;
                    }
                }
                continue;
            }
        }
        for (int v = 0; v < 256; v++) table[v] = step[table[v]];
        identity = 0;
    }
}

/* ColorJitter then NormalizeImage: out [3, h, w] float32; normalize: [3][256] float32, the op's
 * value of each level per channel. scratch: h * w * 7 + 64 bytes. */
void ppcls_jitter_normalize(const unsigned char *image, int h, int w, int n_ops, const int *kinds,
                            const float *factors, const float *normalize, unsigned char *scratch, float *out) {
    const long n = (long)h * w;
    unsigned char table[256];
    jitter_planes(image, n, n_ops, kinds, factors, scratch, table);
    for (int k = 0; k < 3; k++) { /* the pending table folded into the normalise column */
        float column[256];
        const unsigned char *restrict p = scratch + k * n;
        float *restrict dst = out + k * n;
        for (int v = 0; v < 256; v++) column[v] = normalize[256 * k + table[v]];
        for (long i = 0; i < n; i++) dst[i] = column[p[i]];
    }
}

/* ColorJitter then [H, W, 3] -> [3, H, W]: out [3, h, w] uint8. scratch as above. */
void ppcls_jitter_chw(const unsigned char *image, int h, int w, int n_ops, const int *kinds, const float *factors,
                      unsigned char *scratch, unsigned char *out) {
    const long n = (long)h * w;
    unsigned char table[256];
    jitter_planes(image, n, n_ops, kinds, factors, scratch, table);
    memcpy(out, scratch, (size_t)(3 * n));
    lookup_bytes(out, 3 * n, table);
}
