/*
 * CRIU compel's x86 TLS types and getters (<compel/asm/infect-types.h>): the three GDT TLS
 * descriptors of a task's main thread or of another thread, read while it is seized and not
 * running a parasite (a slot the kernel cannot report reads "not present").
 */
#ifndef COMPEL_ASM_INFECT_TYPES_H
#define COMPEL_ASM_INFECT_TYPES_H

#include <asm/ldt.h>

#define GDT_ENTRY_TLS_MIN 12
#define GDT_ENTRY_TLS_MAX 14
#define GDT_ENTRY_TLS_NUM 3

typedef struct user_desc user_desc_t;

typedef struct {
	user_desc_t desc[GDT_ENTRY_TLS_NUM];
} tls_t;

struct parasite_ctl;
struct parasite_thread_ctl;
void compel_arch_get_tls_task(struct parasite_ctl *ctl, tls_t *out);
void compel_arch_get_tls_thread(struct parasite_thread_ctl *tctl, tls_t *out);

#endif /* COMPEL_ASM_INFECT_TYPES_H */
