"""PyMySQL through warpdrive: text queries (each read twice: through a cached
deployment the second is a hit), COM_INIT_DB, a transaction, a multi-statement query,
latin1 text on a latin1 connection. Exits non-zero on the first difference; prints "ok"
at the end."""

import sys

import pymysql
from pymysql.constants import CLIENT

port, database, other, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


def connect(**extra):
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password=password,
                           database=database, autocommit=True, **extra)


conn = connect(client_flag=CLIENT.MULTI_STATEMENTS)
with conn.cursor() as cur:
    cur.execute("CREATE TABLE py (id INT PRIMARY KEY, name VARCHAR(20)) CHARACTER SET utf8mb4")
    cur.execute("INSERT INTO py VALUES (%s, %s), (%s, %s)", (1, "one", 2, "två"))
    for _ in range(2):
        cur.execute("SELECT name FROM py ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == ["one", "två"]
    cur.execute("SELECT 1; SELECT 2")
    assert cur.fetchall() == ((1,),)
    assert cur.nextset()
    assert cur.fetchall() == ((2,),)
    conn.begin()
    cur.execute("INSERT INTO py VALUES (3, 'three')")
    conn.rollback()
    for _ in range(2):
        cur.execute("SELECT COUNT(*) FROM py")
        assert cur.fetchone() == (2,)
    cur.execute("INSERT INTO py VALUES (3, 'three')")
    cur.execute("SELECT COUNT(*) FROM py")
    assert cur.fetchone() == (3,), "the write is read"
    conn.select_db(other)
    cur.execute("SELECT DATABASE()")
    assert cur.fetchone() == (other,)
conn.close()

latin1 = connect(charset="latin1")
with latin1.cursor() as cur:
    cur.execute("SELECT @@character_set_client, @@character_set_results")
    assert cur.fetchone() == ("latin1", "latin1")
    cur.execute("CREATE TABLE l1 (t VARCHAR(10)) CHARACTER SET latin1")
    cur.execute("INSERT INTO l1 VALUES (%s)", ("café",))
    for _ in range(2):
        cur.execute("SELECT t, HEX(t) FROM l1")
        assert cur.fetchone() == ("café", "636166E9")
latin1.close()
print("ok")
