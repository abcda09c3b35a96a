/* h5s_bytes.c - byte order of the fields' files. */
#include "h5s_bytes.h"

void h5s_bytes_swap(void *buf, size_t n, size_t width)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i++, p += width) {
        for (size_t a = 0, b = width - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
    }
}
