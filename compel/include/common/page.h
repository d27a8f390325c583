/* <common/page.h>, as installed next to CRIU's compel headers: the page size (x86_64). */
#ifndef COMPEL_COMMON_PAGE_H
#define COMPEL_COMMON_PAGE_H

#ifndef PAGE_SHIFT
#define PAGE_SHIFT 12
#endif
#ifndef PAGE_SIZE
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#endif
#ifndef PAGE_MASK
#define PAGE_MASK (~(PAGE_SIZE - 1))
#endif
#define PAGE_PFN(addr) ((addr) / PAGE_SIZE)
#define page_size() PAGE_SIZE

#endif /* COMPEL_COMMON_PAGE_H */
