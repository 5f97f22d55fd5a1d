/* cachestat: page cache activity per cgroup, from tracepoints (the classic
 * cachestat kprobes mark_page_accessed & co. are not available here).
 *
 * All four run in the context of the task doing the work (its read, write,
 * page fault or readahead), so the current cgroup is the pod's. Kernel
 * threads (writeback, journal) count for nobody.
 *  - additions (filemap:mm_filemap_add_to_page_cache): pages added to the
 *    cache, 2^order per folio. Exact.
 *  - dirtied (writeback:writeback_dirty_folio): folios that turned dirty,
 *    the event cachestat's account_page_dirtied counted. Exact in events;
 *    a large folio counts once however many pages it spans.
 *  - buf_dirtied (block:block_dirty_buffer): calls of mark_buffer_dirty,
 *    as cachestat counted them. Exact.
 *  - accesses: an approximation. No tracepoint marks a page accessed. A
 *    read() shows up as filemap:mm_filemap_get_pages with the page range it
 *    still wants, once per batch of folios: the first call of a read counts
 *    its whole range, later calls of the same read (same task, file and end)
 *    add nothing. A read past end of file counts the pages it asked for.
 *    Each page fault on a file mapping (filemap:mm_filemap_fault) counts 1;
 *    pages mapped around a fault are not counted, nor writes to cached pages.
 *
 * read_cursor is LRU, one entry per reading thread; cache_stats has one
 * entry per tracked cgroup.
 */
#include "kpod_common.h"

struct cache_stats {
    u64 accesses;
    u64 additions;
    u64 dirtied;
    u64 buf_dirtied;
};

struct read_pos {
    u64 ino;
    u64 last_index;
    u64 index;
    u32 dev;
    u32 pad;
};

BPF_TABLE("lru_hash", u32, struct read_pos, read_cursor, 16384);
BPF_HASH(cache_stats, u64, struct cache_stats, KPOD_MAX_CGROUPS);

static __always_inline struct cache_stats *stats_here(void)
{
    u64 cgid = bpf_get_current_cgroup_id();
    if (!kpod_cgroup_allowed(cgid))
        return 0;
    struct cache_stats zero = {};
    struct cache_stats *s = cache_stats.lookup_or_try_init(&cgid, &zero);
    if (!s)
        kpod_map_full(KPOD_ERR_cache_stats);
    return s;
}

TRACEPOINT_PROBE(filemap, mm_filemap_add_to_page_cache)
{
    struct cache_stats *s = stats_here();
    if (s)
        __sync_fetch_and_add(&s->additions, 1ULL << (args->order & 31));
    return 0;
}

TRACEPOINT_PROBE(writeback, writeback_dirty_folio)
{
    struct cache_stats *s = stats_here();
    if (s)
        __sync_fetch_and_add(&s->dirtied, 1);
    return 0;
}

TRACEPOINT_PROBE(block, block_dirty_buffer)
{
    struct cache_stats *s = stats_here();
    if (s)
        __sync_fetch_and_add(&s->buf_dirtied, 1);
    return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_get_pages)
{
    struct cache_stats *s = stats_here();
    if (!s)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct read_pos pos = {
        .ino = args->i_ino, .dev = args->s_dev,
        .index = args->index, .last_index = args->last_index,
    };
    struct read_pos *prev = read_cursor.lookup(&tid);
    int same_read = prev && prev->ino == pos.ino && prev->dev == pos.dev &&
                    prev->last_index == pos.last_index && prev->index < pos.index;
    read_cursor.update(&tid, &pos);
    if (!same_read && pos.last_index >= pos.index)
        __sync_fetch_and_add(&s->accesses, pos.last_index - pos.index + 1);
    return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_fault)
{
    struct cache_stats *s = stats_here();
    if (s)
        __sync_fetch_and_add(&s->accesses, 1);
    return 0;
}
