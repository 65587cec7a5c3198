/*
 * A QEMU TCG plugin for scripts/bench: counts the guest instructions a qemu-user run
 * executes (every thread) and writes the total to the file given as out=PATH.
 *
 * Debian's qemu-user is built with plugin support but ships no plugins and no
 * qemu-plugin.h, so the few declarations used are written out here. They are part of the
 * plugin API from its first version on; QEMU_PLUGIN_API_VERSION is set by scripts/bench
 * (it tries 1, 2, 3... until qemu accepts the plugin).
 *
 * Each translated block gets a callback that adds its instruction count when it runs
 * (an atomic add: user-mode threads run concurrently). A block left early by an
 * exception is still counted whole, so the figure can be off by a few instructions per
 * signal or fault; nothing in a pull takes such paths in bulk.
 *
 * With blocks=PATH it also writes, per guest block address, the instructions executed
 * there ("<hex address> <count>" lines, every block that ran): with an unstripped build
 * of the same binary, `nm` turns that into a profile by function.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef QEMU_PLUGIN_API_VERSION
#define QEMU_PLUGIN_API_VERSION 1
#endif

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = QEMU_PLUGIN_API_VERSION;

static uint64_t total;
static char out_path[4096];
static char blocks_path[4096];

/* blocks=: one record per translation (a block translated twice has two). */
struct block {
    uint64_t vaddr;
    uint64_t n;
    uint64_t executed;
    struct block *next;
};
static struct block *blocks;
static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;

static void tb_exec(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    __atomic_fetch_add(&total, (uint64_t)(uintptr_t)userdata, __ATOMIC_RELAXED);
}

static void tb_exec_block(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    struct block *b = userdata;
    __atomic_fetch_add(&total, b->n, __ATOMIC_RELAXED);
    __atomic_fetch_add(&b->executed, 1, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (!blocks_path[0]) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
        return;
    }
    struct block *b = calloc(1, sizeof(*b));
    if (!b)
        abort();
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n = n;
    pthread_mutex_lock(&blocks_lock);
    b->next = blocks;
    blocks = b;
    pthread_mutex_unlock(&blocks_lock);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec_block, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = out_path[0] ? fopen(out_path, "w") : stderr;
    if (f) {
        fprintf(f, "%llu\n", (unsigned long long)__atomic_load_n(&total, __ATOMIC_RELAXED));
        if (f != stderr)
            fclose(f);
    }
    if (blocks_path[0] && (f = fopen(blocks_path, "w"))) {
        for (struct block *b = blocks; b; b = b->next) {
            uint64_t e = __atomic_load_n(&b->executed, __ATOMIC_RELAXED);
            if (e)
                fprintf(f, "%llx %llu\n", (unsigned long long)b->vaddr, (unsigned long long)(e * b->n));
        }
        fclose(f);
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info,
                                                               int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            strncpy(out_path, argv[i] + 4, sizeof(out_path) - 1);
        } else if (strncmp(argv[i], "blocks=", 7) == 0) {
            strncpy(blocks_path, argv[i] + 7, sizeof(blocks_path) - 1);
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
