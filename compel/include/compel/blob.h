/*
 * compel blob descriptor for C hosts: what `compel hgen --lang c` headers fill in
 * (<prefix>_get_blob_desc()), and how to place a blob at an address.
 */
#ifndef COMPEL_BLOB_H
#define COMPEL_BLOB_H

/* One exported symbol: its name and its offset from the load base. */
struct compel_blob_symbol {
	const char *name;
	unsigned long offset;
};

/*
 * A blob linked for load base 0: image = text (text_size bytes, map R+X) then data (R+W),
 * then bss_size zero bytes (R+W). Each relocation is the offset of a 64-bit word in the image
 * to which the load base is added.
 */
struct compel_blob_desc {
	const unsigned char *image;
	unsigned long image_size;
	unsigned long text_size;
	unsigned long bss_size;
	unsigned long entry;
	const unsigned int *relocs;
	unsigned long nr_relocs;
	const struct compel_blob_symbol *symbols;
	unsigned long nr_symbols;
};

/*
 * Copies the blob into mem (at least image_size + bss_size bytes), zero-fills the bss and
 * applies the relocations for running at address base. Returns 0, or -1 if a relocation lies
 * outside the image.
 */
static inline int compel_blob_place(const struct compel_blob_desc *d, void *mem, unsigned long base)
{
	unsigned char *m = (unsigned char *)mem;
	unsigned long i;

	for (i = 0; i < d->image_size; i++)
		m[i] = d->image[i];
	for (i = 0; i < d->bss_size; i++)
		m[d->image_size + i] = 0;
	for (i = 0; i < d->nr_relocs; i++) {
		unsigned long off = d->relocs[i];
		unsigned long word;

		if (off + 8 > d->image_size)
			return -1;
		__builtin_memcpy(&word, m + off, 8);
		word += base;
		__builtin_memcpy(m + off, &word, 8);
	}
	return 0;
}

#endif /* COMPEL_BLOB_H */
