/* store_cmd_run.h — for the unit tests of the store's command builders (test_store_conn.c,
 * test_store_flows.c): one blocking hiredis connection to the binary's shared redis-server
 * (redis_proc.h), emptied before each test, and run()/run_int() that send a built command
 * (store/cmd.h), free it and fail the test on a Redis error.
 * Static functions: each test binary includes it once, after redis_proc.h and cmocka. */
#ifndef TESTS_UNIT_STORE_CMD_RUN_H
#define TESTS_UNIT_STORE_CMD_RUN_H
#include "store/cmd.h"

static redisContext *g_c;

static int group_setup(void **state)
{
    (void)state;
    redis_shared_start();
    g_c = ctl_connect(&g_redis);
    return g_c == NULL;
}

static int group_teardown(void **state)
{
    (void)state;
    redisFree(g_c);
    redis_kill(&g_redis);
    return 0;
}

static int flush(void **state)
{
    (void)state;
    freeReplyObject(redisCommand(g_c, "FLUSHALL"));
    return 0;
}

/* Send cmd (and free it); the reply, which the caller frees. */
static redisReply *run(store_cmd_t *cmd)
{
    redisReply *r = redisCommandArgv(g_c, cmd->argc, cmd->argv, cmd->lens);
    store_cmd_free(cmd);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("command error: %s", r->str);
    return r;
}

static long long run_int(store_cmd_t *cmd)
{
    redisReply *r = run(cmd);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}
#endif
