/* compel shmem plugin, for C parasites: memory shared with the host. */
#ifndef COMPEL_PLUGIN_SHMEM_H
#define COMPEL_PLUGIN_SHMEM_H

#include <compel/plugins/std.h>

/* Creates a region of size bytes, maps it here and sends its memfd to the host. NULL on error. */
void *compel_shmem_create(unsigned long size);
/* Receives a region the host created and maps it here; stores its size. NULL on error. */
void *compel_shmem_receive(unsigned long *size);

/* CRIU compel's names for the same two calls. */
static inline void *shmem_create(unsigned long size) { return compel_shmem_create(size); }
static inline void *shmem_receive(unsigned long *size) { return compel_shmem_receive(size); }

#endif /* COMPEL_PLUGIN_SHMEM_H */
