/* compel shmem plugin, for C parasites: memory shared with the host. */
#ifndef COMPEL_PLUGIN_SHMEM_H
#define COMPEL_PLUGIN_SHMEM_H

#include <compel/plugins/std.h>

/* Creates a region of size bytes, maps it here and sends its memfd to the host. NULL on error. */
void *compel_shmem_create(unsigned long size);
/* Receives a region the host created and maps it here; stores its size. NULL on error. */
void *compel_shmem_receive(unsigned long *size);

#endif /* COMPEL_PLUGIN_SHMEM_H */
